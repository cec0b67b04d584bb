"""`make run`: the whole system on one machine (`python -m devrun`).

The top floor of the project: it may import every app, and nothing imports it. It starts the
embedded services it needs (devstack), then Django, then supervises the processes an
operator would run (web, relay, normalizer, worker, scheduler), and sets up a demo against
the in-process Oura simulator unless the OURA_* URLs point at a real (or any other) Oura.
"""
