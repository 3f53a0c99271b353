//! Every JSON-line message the host and the guest read from each other:
//! control requests (guest reads) and answers (host reads), host-port
//! reservation requests (host reads, from the guest) and answers (guest
//! reads), and the port-list stream (host reads), each line taken with the
//! capped line reader both sides use. Whatever parses must serialize and
//! parse back to the same value, and the host's port list must follow the
//! stream's rules.
//!
//! Input: `[seed] lines…`; the seed picks the reader's buffer and line cap.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde::de::DeserializeOwned;
use serde::Serialize;
use vmctl_fuzz::block_on;
use vmctl_proto::control::{ControlRequest, ControlResponse};
use vmctl_proto::forward::{HostPortRequest, HostPortResponse};
use vmctl_proto::line::read_line_capped;
use vmctl_proto::ports::{apply, PortBindingList, PortEvent};

/// Parses `line` as `T`; whatever parses round-trips.
fn check<T>(line: &str) -> Option<T>
where
    T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
{
    let value: T = serde_json::from_str(line).ok()?;
    let text = serde_json::to_string(&value).expect("serializes");
    assert!(!text.contains('\n'), "one message is one line: {text}");
    let again: T = serde_json::from_str(&text).expect("reads back what it wrote");
    assert_eq!(again, value);
    Some(value)
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let capacity = 1 + usize::from(seed & 0x0f) * 17;
    let cap = 8 + usize::from(seed >> 4) * 64;
    let mut reader = tokio::io::BufReader::with_capacity(capacity, stream);
    let mut list = PortBindingList::default();
    let mut consumed = 0;
    loop {
        let mut line = String::new();
        match block_on(read_line_capped(&mut reader, &mut line, cap)) {
            Ok(0) => {
                assert_eq!(consumed, stream.len(), "every byte was read");
                break;
            }
            Ok(n) => {
                assert_eq!(n, line.len());
                assert!(n <= cap, "a line of {n} bytes passed a cap of {cap}");
                assert_eq!(line.as_bytes(), &stream[consumed..consumed + n]);
                consumed += n;
            }
            Err(_) => {
                assert!(line.is_empty(), "nothing of a refused line is kept");
                break;
            }
        }
        let line = line.trim_end_matches('\n');
        check::<ControlRequest>(line);
        check::<ControlResponse>(line);
        check::<HostPortRequest>(line);
        check::<HostPortResponse>(line);
        check::<PortBindingList>(line);
        let _ = vmctl_proto::parse_api_version(line);
        if let Some(event) = check::<PortEvent>(line) {
            let before = list.clone();
            let followed = apply(&mut list, &event);
            if !followed {
                assert_eq!(list, before, "a gap changes nothing");
                continue;
            }
            assert_eq!(list.generation, event.generation());
            match &event {
                PortEvent::Added { binding, .. } => assert!(list.bindings.contains(binding)),
                PortEvent::Removed { binding, .. } => assert!(!list.bindings.contains(binding)),
                PortEvent::Snapshot(snapshot) => assert_eq!(&list, snapshot),
            }
        }
    }
});
