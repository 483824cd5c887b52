"""Media making for the built-in workflows: composition, synthesis, encoding and
cover art, on a CPU, with numpy, PyAV and Pillow only.

Nothing here knows about tasks: the workflow modules beside this package turn
these functions into workflows through the workflow SDK.
"""
