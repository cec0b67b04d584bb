#!/bin/sh
# Build-time `collectstatic` for the Dockerfile (docs/phase-3/deploy.md).
#
# Production settings pick the production static storage (whitenoise, compressed), and they
# refuse to import without every connection URL and secret. This gives them throw-away values
# that exist only in this process: nothing is connected to, the secrets are random, and none
# of it ends up in the image's environment. Extra arguments go to collectstatic (the tests run
# this script with --dry-run: health_project/tests/test_deploy_files.py).
set -eu

random_token() { python -c 'import secrets; print(secrets.token_urlsafe(48))'; }
random_fernet_key() {
    python -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())'
}

HEALTH_ENV=production \
HEALTH_EMBEDDED_SERVICES=false \
DJANGO_SECRET_KEY="$(random_token)" \
DJANGO_ALLOWED_HOSTS=build.invalid \
PUBLIC_BASE_URL=https://build.invalid \
DATABASE_URL=postgresql://build@build.invalid:5432/build \
NATS_URL=nats://build.invalid:4222 \
OURA_API_BASE_URL=https://build.invalid \
OURA_AUTHORIZE_URL=https://build.invalid/oauth/authorize \
OURA_TOKEN_URL=https://build.invalid/oauth/token \
OURA_REVOKE_URL=https://build.invalid/oauth/revoke \
OURA_CLIENT_ID=build \
OURA_CLIENT_SECRET="$(random_token)" \
OURA_WEBHOOK_VERIFICATION_TOKEN="$(random_token)" \
TOKEN_ENCRYPTION_KEYS="$(random_fernet_key)" \
PERSON_HASH_KEY="$(random_token)" \
ADMIN_URL_PREFIX=build-only/ \
    python manage.py collectstatic --noinput "$@"
