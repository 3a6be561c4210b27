"""Computer-aided diagnosis: classifiers under full, weak (MIL) and semi supervision,
multi-modal fusion, calibrated probabilities and explanations (``medimg diagnose ...``)."""
