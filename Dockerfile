# syntax=docker/dockerfile:1
# Production image of the health integrations service: one image for every process
# (web, relay, normalizer, worker, scheduler, provision); compose.yaml picks the process with
# `command:`. See docs/phase-3/deploy.md. Held to the code by health_project/tests/test_deploy_files.py.

# --- builder: a virtualenv with everything in requirements.txt ---------------------------
FROM python:3.11-slim AS builder

# Compilers only here, for any dependency that ships no wheel for this platform.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
# All of requirements.txt, dev/test tools and embedded-service wheels included: it is the one
# lock file `make test` and `make run` use too (deploy.md, "What is in the image").
RUN /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check -r /tmp/requirements.txt

# --- final: slim runtime, no compilers ---------------------------------------------------
FROM python:3.11-slim AS runtime

# tini as PID 1: forwards SIGTERM to the process and reaps children.
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 health \
    && useradd --system --uid 10001 --gid health --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin health

COPY --from=builder /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HEALTH_ENV=production

WORKDIR /app
COPY . /app
# Static files are collected into the image (served by whitenoise), with throw-away settings
# values that live only in this build step: see the script.
RUN sh deploy/collectstatic.sh

USER health:health
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "deploy/healthcheck.py"]
ENTRYPOINT ["tini", "--"]
# The web process by default; compose.yaml sets `command:` for every other one.
CMD ["granian", "--interface", "asgi", "health_project.asgi:application", "--host", "0.0.0.0", "--port", "8000", "--workers", "2", "--workers-kill-timeout", "5"]
