//! Signing with a key held by `ssh-agent` (the agent protocol, draft-miller-ssh-agent): the
//! private key never leaves the agent. homelab names the key by its public half (a `.pub` file,
//! or Git's `user.signingkey = key::ssh-ed25519 AAAA…`), asks the agent at `SSH_AUTH_SOCK` to
//! sign the SSHSIG signed data, and wraps the answer exactly as `ssh-keygen -Y sign` does.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::Duration;

use ssh_key::{HashAlg, LineEnding, PublicKey, Signature, SshSig};

use super::sshsig::SignError;

const REQUEST_IDENTITIES: u8 = 11;
const IDENTITIES_ANSWER: u8 = 12;
const SIGN_REQUEST: u8 = 13;
const SIGN_RESPONSE: u8 = 14;
/// Ask for `rsa-sha2-512` signatures from RSA keys, as ssh-keygen does.
const RSA_SHA2_512: u32 = 4;
const MAX_MESSAGE: usize = 256 * 1024;

/// A public key whose private half is in the agent.
#[derive(Debug, Clone)]
pub struct AgentKey {
    public: PublicKey,
    socket: PathBuf,
}

fn agent_error(reason: impl Into<String>) -> SignError {
    SignError::Sign { namespace: "ssh-agent".to_owned(), reason: reason.into() }
}

fn put_string(out: &mut Vec<u8>, s: &[u8]) {
    out.extend_from_slice(&(s.len() as u32).to_be_bytes());
    out.extend_from_slice(s);
}

fn take_u32(b: &mut &[u8]) -> Option<u32> {
    let (head, rest) = b.split_at_checked(4)?;
    *b = rest;
    Some(u32::from_be_bytes(head.try_into().ok()?))
}

fn take_string<'a>(b: &mut &'a [u8]) -> Option<&'a [u8]> {
    let n = take_u32(b)? as usize;
    let (head, rest) = b.split_at_checked(n)?;
    *b = rest;
    Some(head)
}

impl AgentKey {
    /// `public`: an OpenSSH public key line (`ssh-ed25519 AAAA… comment`). The agent must hold
    /// its private half.
    pub fn new(public: &str) -> Result<AgentKey, SignError> {
        let public = PublicKey::from_openssh(public.trim())
            .map_err(|e| agent_error(format!("not an OpenSSH public key: {e}")))?;
        let socket = std::env::var_os("SSH_AUTH_SOCK").map(PathBuf::from).ok_or_else(|| {
            agent_error("the key is a public key, so it must be held by ssh-agent, but SSH_AUTH_SOCK is not set: start ssh-agent and `ssh-add` the key, or pass the private key file")
        })?;
        let key = AgentKey { public, socket };
        let blob = key.blob()?;
        if !key.identities()?.contains(&blob) {
            return Err(agent_error(format!(
                "ssh-agent does not hold the key {}: `ssh-add` it first",
                key.fingerprint()
            )));
        }
        Ok(key)
    }

    fn blob(&self) -> Result<Vec<u8>, SignError> {
        self.public.to_bytes().map_err(|e| agent_error(e.to_string()))
    }

    fn call(&self, request: &[u8]) -> Result<Vec<u8>, SignError> {
        let mut s = UnixStream::connect(&self.socket).map_err(|e| {
            agent_error(format!("cannot reach ssh-agent at {}: {e}", self.socket.display()))
        })?;
        let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
        let mut msg = (request.len() as u32).to_be_bytes().to_vec();
        msg.extend_from_slice(request);
        s.write_all(&msg).map_err(|e| agent_error(format!("ssh-agent: {e}")))?;
        let mut len = [0u8; 4];
        s.read_exact(&mut len).map_err(|e| agent_error(format!("ssh-agent: {e}")))?;
        let len = u32::from_be_bytes(len) as usize;
        if len == 0 || len > MAX_MESSAGE {
            return Err(agent_error("ssh-agent sent a malformed answer"));
        }
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).map_err(|e| agent_error(format!("ssh-agent: {e}")))?;
        Ok(body)
    }

    /// The key blobs the agent holds.
    fn identities(&self) -> Result<Vec<Vec<u8>>, SignError> {
        let answer = self.call(&[REQUEST_IDENTITIES])?;
        let (kind, mut rest) = answer.split_first().ok_or_else(|| agent_error("empty answer"))?;
        if *kind != IDENTITIES_ANSWER {
            return Err(agent_error("ssh-agent refused to list its keys"));
        }
        let n = take_u32(&mut rest).ok_or_else(|| agent_error("malformed key list"))?;
        let mut out = Vec::new();
        for _ in 0..n {
            let blob = take_string(&mut rest).ok_or_else(|| agent_error("malformed key list"))?;
            take_string(&mut rest).ok_or_else(|| agent_error("malformed key list"))?;
            out.push(blob.to_vec());
        }
        Ok(out)
    }

    /// Signs like `SigningKey::sign`: SSHSIG over SHA-512, armored.
    pub fn sign(&self, namespace: &str, message: &[u8]) -> Result<String, SignError> {
        let fail = |reason: String| SignError::Sign { namespace: namespace.to_owned(), reason };
        let data = SshSig::signed_data(namespace, HashAlg::Sha512, message)
            .map_err(|e| fail(e.to_string()))?;
        let mut req = vec![SIGN_REQUEST];
        put_string(&mut req, &self.blob()?);
        put_string(&mut req, &data);
        let flags = if self.public.algorithm().is_rsa() { RSA_SHA2_512 } else { 0 };
        req.extend_from_slice(&flags.to_be_bytes());
        let answer = self.call(&req)?;
        let (kind, mut rest) =
            answer.split_first().ok_or_else(|| fail("empty answer from ssh-agent".into()))?;
        if *kind != SIGN_RESPONSE {
            return Err(fail("ssh-agent refused to sign (is the key confirmed or locked?)".into()));
        }
        let blob = take_string(&mut rest)
            .ok_or_else(|| fail("malformed signature from ssh-agent".into()))?;
        let signature = Signature::try_from(blob).map_err(|e| fail(e.to_string()))?;
        let sig =
            SshSig::new(self.public.key_data().clone(), namespace, HashAlg::Sha512, signature)
                .map_err(|e| fail(e.to_string()))?;
        let mut armored = sig.to_pem(LineEnding::LF).map_err(|e| fail(e.to_string()))?;
        if !armored.ends_with('\n') {
            armored.push('\n');
        }
        Ok(armored)
    }

    pub fn fingerprint(&self) -> String {
        self.public.fingerprint(HashAlg::Sha256).to_string()
    }

    pub fn public_key_openssh(&self) -> String {
        super::sshsig::public_key_openssh(self.public.key_data())
    }
}
