//! The signature layer of plans and approvals (DESIGN.md §5): plans are signed in the
//! [`PLAN_NAMESPACE`], approvals in the [`APPROVE_NAMESPACE`], both as SSHSIG (byte for byte what
//! `ssh-keygen -Y sign` writes), and verified against an OpenSSH allowed-signers file
//! (`inventory/allowed_signers`), so the same keys serve Git, Forgejo and homelab.
//!
//! [`sshsig`] owns the signing side (loading a private key, producing and splitting armored
//! signatures); [`signers`] owns the verifying side (the allowed-signers file and the checks a
//! signature must pass).

pub mod signers;
pub mod sshsig;

pub use signers::{AllowedSigners, SignersError, Verified, VerifyError};
pub use sshsig::{split_armored, SignError, SigningKey, APPROVE_NAMESPACE, PLAN_NAMESPACE};
