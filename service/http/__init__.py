"""The HTTP room: the app factory (app.py), the ASGI entry that times every request and sends POST /predict
straight to its handler (asgi.py), one router module per concern (routes/), error rendering (errors.py),
response models (schemas.py) and dependency aliases (deps.py). Thin: the work is in inference/ and
monitoring/."""
