"""The optimizer and its weighting networks M: GWNMO/HG (``gwnmo``), the update direction
(``direction``), the per-coordinate and thesis M (``nets``), the factored M (``factored``) and
loading a meta-trained M (``pretrained``)."""
