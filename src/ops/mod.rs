//! The crate's own tensor ops on dfdx's gradient tape: conv2d, fused batch-norm, pooling.
