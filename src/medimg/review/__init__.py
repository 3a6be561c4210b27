"""The review page: a local web app where a person checks and corrects a model's labels.

``medimg review DIR`` serves the cases of a review folder (what ``medimg segment suggest`` writes;
:mod:`medimg.review.folder`) on 127.0.0.1 behind a random token (:mod:`medimg.review.server`),
with a small canvas viewer bundled in the package (``static/``: nothing is fetched at run time).
Needs the ``review`` extra (FastAPI, uvicorn).
"""
