"""The inference room, the request hot path: the Predictor (load / predict / ready), the forward step behind
a small runtime object (runtime.py), micro-batching (batching.py), request parsing (inputs.py), answer
encoding (answers.py) and runtime tuning (tuning.py). Never imports service.http."""
