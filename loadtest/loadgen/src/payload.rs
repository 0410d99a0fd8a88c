//! The string argument every timed message carries: `@<scheduled ns>.<sequence>.` padded with
//! `x` to the requested size.
//!
//! The scheduled time is the open-loop send time (not the actual one), so the receiver's
//! `now - scheduled` includes any queueing on the sender: the coordinated-omission correction.
//! Only ASCII digits, `@`, `.` and `x` appear, so the string never needs JSON escaping and the
//! stamp can be found in a raw WebSocket frame by its `@`.

/// What a timed payload says about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stamp {
    /// When the message was scheduled to be sent (monotonic ns).
    pub scheduled_ns: u64,
    /// The sender's sequence number.
    pub seq: u64,
}

/// Writes a payload of `size` bytes (or just the stamp, if that is longer) into `out`.
pub fn write(out: &mut Vec<u8>, stamp: Stamp, size: usize) {
    out.clear();
    out.push(b'@');
    push_decimal(out, stamp.scheduled_ns);
    out.push(b'.');
    push_decimal(out, stamp.seq);
    out.push(b'.');
    if out.len() < size {
        out.resize(size, b'x');
    }
}

/// Reads the stamp at the start of a payload string (without its quotes).
pub fn parse(payload: &[u8]) -> Option<Stamp> {
    let rest = payload.strip_prefix(b"@")?;
    let (scheduled_ns, rest) = take_decimal(rest)?;
    let rest = rest.strip_prefix(b".")?;
    let (seq, rest) = take_decimal(rest)?;
    rest.strip_prefix(b".")?;
    Some(Stamp { scheduled_ns, seq })
}

/// Finds and reads the stamp anywhere in a raw frame (the first `@` starts it).
pub fn find(frame: &[u8]) -> Option<Stamp> {
    let at = memchr::memchr(b'@', frame)?;
    parse(&frame[at..])
}

fn push_decimal(out: &mut Vec<u8>, mut value: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (value % 10) as u8;
        value /= 10;
        if value == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
}

fn take_decimal(input: &[u8]) -> Option<(u64, &[u8])> {
    let len = input.iter().take_while(|b| b.is_ascii_digit()).count();
    if len == 0 || len > 19 {
        return None;
    }
    let mut value = 0u64;
    for &b in &input[..len] {
        value = value * 10 + u64::from(b - b'0');
    }
    Some((value, &input[len..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_payload_is_padded_to_the_requested_size_and_reads_back_its_stamp() {
        let mut out = Vec::new();
        let stamp = Stamp {
            scheduled_ns: 123_456_789_012,
            seq: 42,
        };
        write(&mut out, stamp, 1024);
        assert_eq!(out.len(), 1024);
        assert!(out.starts_with(b"@123456789012.42.xx"));
        assert_eq!(parse(&out), Some(stamp));
    }

    #[test]
    fn a_payload_shorter_than_its_stamp_keeps_the_whole_stamp() {
        let mut out = Vec::new();
        write(
            &mut out,
            Stamp {
                scheduled_ns: 10,
                seq: 0,
            },
            2,
        );
        assert_eq!(out, b"@10.0.");
    }

    #[test]
    fn a_stamp_is_found_inside_a_raw_json_frame() {
        let frame = br#"{"type":1,"target":"Send","arguments":["@77.3.xxx"]}"#;
        assert_eq!(
            find(frame),
            Some(Stamp {
                scheduled_ns: 77,
                seq: 3
            })
        );
    }

    #[test]
    fn text_without_a_stamp_is_not_read_as_one() {
        assert_eq!(parse(b"hello"), None);
        assert_eq!(parse(b"@12x"), None);
        assert_eq!(parse(b"@.1."), None);
        assert_eq!(find(b"no stamp here"), None);
    }
}
