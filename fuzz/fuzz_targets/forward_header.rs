//! The forward service's binary messages (`vmctl_proto::forward`): the
//! header the host opens a forward with (read by the guest), the guest's
//! reply (read by the host), and UDP datagrams with their length prefix
//! (read by both). Each parse of arbitrary bytes must re-encode to something
//! that parses to the same value.
#![no_main]

use libfuzzer_sys::fuzz_target;
use vmctl_fuzz::block_on;
use vmctl_proto::forward::{
    read_datagram, write_datagram, ForwardError, ForwardHeader, ForwardReply, MAX_DATAGRAM,
};

fuzz_target!(|data: &[u8]| {
    // The header, as the guest's forward service reads it.
    let mut reader = data;
    if let Ok(header) = block_on(ForwardHeader::read(&mut reader)) {
        let wire = header.encode();
        let again = block_on(ForwardHeader::read(&mut &wire[..])).expect("an encoded header");
        assert_eq!(again, header);
        // What the guest reads after the header is the connection's own bytes.
        assert!(data.len() - reader.len() >= wire.len());
    }

    // The reply, as the host reads it.
    if let Ok(reply) = block_on(ForwardReply::read(&mut &data[..])) {
        let wire = reply.encode();
        let again = block_on(ForwardReply::read(&mut &wire[..])).expect("an encoded reply");
        match (&reply, &again) {
            (ForwardReply::Failed(long), ForwardReply::Failed(short)) if long.len() > 1024 => {
                assert!(short.len() <= 1024 + 3, "the message is cut, not grown");
            }
            _ => assert_eq!(again, reply),
        }
    }

    // Datagrams, as both sides read a UDP flow: each re-encodes to the
    // bytes it was read from.
    let mut reader = data;
    let mut buffer = Vec::new();
    loop {
        let before = reader.len();
        match block_on(read_datagram(&mut reader, &mut buffer)) {
            Ok(Some(())) => {
                assert!(buffer.len() <= MAX_DATAGRAM);
                let mut wire = Vec::new();
                block_on(write_datagram(&mut wire, &buffer)).expect("write a datagram");
                let start = data.len() - before;
                assert_eq!(wire, data[start..start + wire.len()]);
                assert_eq!(before - reader.len(), wire.len());
            }
            Ok(None) => break,
            Err(ForwardError::Datagram(len)) => {
                assert!(len > MAX_DATAGRAM);
                break;
            }
            Err(_) => break,
        }
    }
});
