"""Package data: the source model of the built-in synthetic benchmark's
default configuration (``synthetic_source_small_deeplab.pt``) and its
manifest (``.json``); ``python -m lse_fast.assets.rebuild`` remakes both."""
