"""Supervised segmentation: dataset -> fingerprint -> plan -> train -> predict -> evaluate.

Self-configuring like nnU-Net (:mod:`.plan`), trained through :mod:`medimg.engine`
(:mod:`.train`), with a shipped default model (``default/``) so ``medimg segment predict`` works
out of the box. CLI: ``medimg segment plan|train|predict|evaluate|simulate``.
"""
