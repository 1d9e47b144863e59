//! The Raclette tracker: rendezvous server, peer directory, relay.
