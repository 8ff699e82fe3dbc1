"""The ``stdout`` sink (``sink``) and the checkpoint file it keeps its position in
(``checkpoint``), which only it needs."""
