"""Every layer of the ViT as a forward/backward pair of plain functions.

Each ``*_forward(...)`` returns ``(output, cache)``; the matching ``*_backward(dout, cache)``
returns the input gradient first, then the parameter gradients.  A cache is a NamedTuple
defined next to its pair, holding the minimum the backward needs.
"""
