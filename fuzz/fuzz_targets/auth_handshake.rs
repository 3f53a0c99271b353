//! The per-boot-secret handshake (`vmctl_proto::auth`) on every host ↔ guest
//! stream, from the side of a peer that does not hold the secret: whatever
//! it sends as a client's proof, a server's hello or a server's proof must be
//! refused — unless it is byte for byte what the honest peer would send —
//! and the honest exchange must pass.
//!
//! Input: `secret (32) ‖ port (4) ‖ server nonce (32) ‖ client nonce (32) ‖
//! peer bytes…` (short inputs are padded with zeros).
#![no_main]

use std::io::{self, Read, Write};

use libfuzzer_sys::fuzz_target;
use vmctl_proto::auth::{
    connect_blocking, Client, Secret, Server, CLIENT_PROOF_LEN, HELLO_LEN, MAGIC, NONCE_LEN,
    SECRET_LEN, SERVER_PROOF_LEN,
};

/// A stream whose reads come from the peer's bytes; writes go nowhere.
struct Peer<'a>(&'a [u8]);

impl Read for Peer<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf)
    }
}

impl Write for Peer<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn take<const N: usize>(data: &mut &[u8]) -> [u8; N] {
    let mut out = [0u8; N];
    let n = N.min(data.len());
    out[..n].copy_from_slice(&data[..n]);
    *data = &data[n..];
    out
}

fuzz_target!(|data: &[u8]| {
    let mut rest = data;
    let secret_bytes: [u8; SECRET_LEN] = take(&mut rest);
    let port = u32::from_be_bytes(take(&mut rest));
    let server_nonce: [u8; NONCE_LEN] = take(&mut rest);
    let client_nonce: [u8; NONCE_LEN] = take(&mut rest);
    let peer = rest;
    let secret = Secret::from_bytes(&secret_bytes).expect("32 bytes");

    // The honest exchange passes, on this port only.
    let server = Server::with_nonce(secret.clone(), port, server_nonce);
    let hello = server.hello();
    let (client, answer) =
        Client::answer_with_nonce(secret.clone(), port, &hello, client_nonce).expect("hello");
    let server_proof = server.check(&answer).expect("the honest client's proof");
    client
        .check(&server_proof)
        .expect("the honest server's proof");
    let elsewhere = Server::with_nonce(secret.clone(), port.wrapping_add(1), server_nonce);
    assert!(
        elsewhere.check(&answer).is_err(),
        "a proof is bound to its port"
    );
    // A server's proof does not pass as a client's, nor the reverse.
    let mut reflected = [0u8; CLIENT_PROOF_LEN];
    reflected[..NONCE_LEN].copy_from_slice(&client_nonce);
    reflected[NONCE_LEN..].copy_from_slice(&server_proof);
    assert!(
        server.check(&reflected).is_err(),
        "a reflected server proof"
    );
    assert!(
        client.check(&answer[NONCE_LEN..]).is_err(),
        "a reflected client proof"
    );

    // A peer without the secret, as a client: its bytes as the proof.
    if server.check(peer).is_ok() {
        let nonce: [u8; NONCE_LEN] = peer[..NONCE_LEN].try_into().expect("checked length");
        let (_, honest) =
            Client::answer_with_nonce(secret.clone(), port, &hello, nonce).expect("hello");
        assert_eq!(peer, honest, "the server took a proof it did not compute");
    }
    // As a server: its bytes as the hello, then as the proof.
    let hello_part = &peer[..peer.len().min(HELLO_LEN)];
    match Client::answer_with_nonce(secret.clone(), port, hello_part, client_nonce) {
        Ok((client, answer)) => {
            assert!(hello_part.len() == HELLO_LEN && hello_part[..MAGIC.len()] == MAGIC);
            let proof = &peer[HELLO_LEN..];
            if client.check(proof).is_ok() {
                let nonce: [u8; NONCE_LEN] = hello_part[MAGIC.len()..]
                    .try_into()
                    .expect("a hello's nonce");
                let honest = Server::with_nonce(secret.clone(), port, nonce)
                    .check(&answer)
                    .expect("the honest server takes the honest answer");
                assert_eq!(proof, honest, "the client took a proof it did not compute");
            }
        }
        Err(_) => assert!(hello_part.len() < HELLO_LEN || hello_part[..MAGIC.len()] != MAGIC),
    }
    // The blocking client over a stream the peer writes: a random nonce the
    // peer cannot know, so it never passes.
    assert!(connect_blocking(&mut Peer(peer), &secret, port).is_err());
    assert_eq!(SERVER_PROOF_LEN, server_proof.len());
});
