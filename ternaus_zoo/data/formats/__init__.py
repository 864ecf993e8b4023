"""Decoders, one module per library: :mod:`.opencv` (the fast path), :mod:`.pillow` (GIF and palette PNG),
:mod:`.tiff` (what OpenCV would misread, and windows of large TIFFs). :mod:`ternaus_zoo.data.io` picks one
by the file's first bytes; each returns ``(H, W, C)`` in RGB(A) order and the file's own dtype."""
