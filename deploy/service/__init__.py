"""The HTTP scoring service behind serve.py: models, micro-batching, feedback, updates, the operator page.

Deploy layer: never imports training code; "Update model" runs train.py --update and export_model.py
as subprocesses (see updates.py).
"""
