//! Pure image transforms with torchvision semantics, and the patch sampler ([`patches`]).
