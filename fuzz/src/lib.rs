//! What the fuzz targets share: the properties every decoder keeps, the small chain the
//! sync and ladder targets run against, the ladder's input format, and the seed inputs.
//!
//! Every target decodes bytes a peer or a tracker could send, exactly as the node or the
//! tracker does, then does with the value what they do next where that needs no network:
//! the stateless checks, the mempool, the header chain check, the answer to a request.
//! A panic anywhere is a bug; so is a broken property (an `assert!` here).

pub mod fixture;
pub mod ladder;
pub mod properties;
pub mod seeds;
