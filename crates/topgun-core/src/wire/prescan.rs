//! A cheap pass over a frame's bytes, before decoding it: is it one
//! well-formed MessagePack map, no deeper than the limit, with nothing
//! after it, and what is its `type`? Iterative and allocation-free apart
//! from a small stack, so any input is safe to scan.

use rmp::Marker;

/// Takes `n` bytes off the front of `rd`.
fn take<'a>(rd: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
    if rd.len() < n {
        return None;
    }
    let (head, tail) = rd.split_at(n);
    *rd = tail;
    Some(head)
}

fn be(rd: &mut &[u8], n: usize) -> Option<u64> {
    Some(
        take(rd, n)?
            .iter()
            .fold(0u64, |acc, b| (acc << 8) | u64::from(*b)),
    )
}

/// What follows a marker: bytes of data to skip, or a container of
/// `children` values.
enum Item {
    Data(u64),
    Container(u64),
}

fn item(marker: Marker, rd: &mut &[u8]) -> Option<Item> {
    use Marker::*;
    Some(match marker {
        FixPos(_) | FixNeg(_) | Null | True | False => Item::Data(0),
        U8 | I8 => Item::Data(1),
        U16 | I16 => Item::Data(2),
        U32 | I32 | F32 => Item::Data(4),
        U64 | I64 | F64 => Item::Data(8),
        FixStr(n) => Item::Data(u64::from(n)),
        Str8 | Bin8 => Item::Data(be(rd, 1)?),
        Str16 | Bin16 => Item::Data(be(rd, 2)?),
        Str32 | Bin32 => Item::Data(be(rd, 4)?),
        FixExt1 => Item::Data(2),
        FixExt2 => Item::Data(3),
        FixExt4 => Item::Data(5),
        FixExt8 => Item::Data(9),
        FixExt16 => Item::Data(17),
        Ext8 => Item::Data(be(rd, 1)? + 1),
        Ext16 => Item::Data(be(rd, 2)? + 1),
        Ext32 => Item::Data(be(rd, 4)? + 1),
        FixArray(n) => Item::Container(u64::from(n)),
        Array16 => Item::Container(be(rd, 2)?),
        Array32 => Item::Container(be(rd, 4)?),
        FixMap(n) => Item::Container(2 * u64::from(n)),
        Map16 => Item::Container(2 * be(rd, 2)?),
        Map32 => Item::Container(2 * be(rd, 4)?),
        Reserved => return None,
    })
}

/// Skips `count` values whose enclosing container is at `depth`; `None`
/// if one is malformed, truncated, or nests deeper than `max_depth`.
fn skip(rd: &mut &[u8], count: u64, depth: usize, max_depth: usize) -> Option<()> {
    let mut stack = vec![(count, depth)];
    while let Some(top) = stack.last_mut() {
        if top.0 == 0 {
            stack.pop();
            continue;
        }
        top.0 -= 1;
        let parent = top.1;
        let marker = Marker::from_u8(*take(rd, 1)?.first()?);
        match item(marker, rd)? {
            Item::Data(n) => {
                take(rd, usize::try_from(n).ok()?)?;
            }
            Item::Container(children) => {
                if parent + 1 > max_depth {
                    return None;
                }
                stack.push((children, parent + 1));
            }
        }
    }
    Some(())
}

/// The `type` of `bytes` if they are exactly one map, at most `max_depth`
/// containers deep, with a string `type` entry; `None` otherwise (the
/// caller then takes the thorough path, which names the problem).
pub(super) fn frame_type(bytes: &[u8], max_depth: usize) -> Option<&str> {
    let mut rd = bytes;
    if max_depth == 0 {
        return None;
    }
    let Item::Container(entries) = item(Marker::from_u8(*take(&mut rd, 1)?.first()?), &mut rd)?
    else {
        return None;
    };
    if !matches!(
        bytes.first().map(|b| Marker::from_u8(*b)),
        Some(Marker::FixMap(_) | Marker::Map16 | Marker::Map32)
    ) {
        return None;
    }
    let mut type_name = None;
    for _ in 0..entries / 2 {
        let key_start = rd;
        let is_type = match Marker::from_u8(*take(&mut rd, 1)?.first()?) {
            m @ (Marker::FixStr(_) | Marker::Str8 | Marker::Str16 | Marker::Str32) => {
                let Item::Data(n) = item(m, &mut rd)? else {
                    return None;
                };
                take(&mut rd, usize::try_from(n).ok()?)? == b"type"
            }
            _ => {
                rd = key_start;
                skip(&mut rd, 1, 1, max_depth)?;
                false
            }
        };
        if is_type {
            let value_start = rd;
            match Marker::from_u8(*take(&mut rd, 1)?.first()?) {
                m @ (Marker::FixStr(_) | Marker::Str8 | Marker::Str16 | Marker::Str32) => {
                    let Item::Data(n) = item(m, &mut rd)? else {
                        return None;
                    };
                    let name = take(&mut rd, usize::try_from(n).ok()?)?;
                    type_name = Some(std::str::from_utf8(name).ok()?);
                }
                _ => {
                    rd = value_start;
                    skip(&mut rd, 1, 1, max_depth)?;
                }
            }
        } else {
            skip(&mut rd, 1, 1, max_depth)?;
        }
    }
    if rd.is_empty() {
        type_name
    } else {
        None
    }
}

/// Whether `bytes` are exactly one well-formed MessagePack value whose
/// containers, counted from `above` levels of enclosing frame, stay within
/// `max_depth`.
pub(super) fn one_value(bytes: &[u8], above: usize, max_depth: usize) -> bool {
    let mut rd = bytes;
    skip(&mut rd, 1, above, max_depth).is_some() && rd.is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(v: &rmpv::Value) -> Vec<u8> {
        let mut out = Vec::new();
        rmpv::encode::write_value(&mut out, v).unwrap();
        out
    }

    #[test]
    fn finds_the_type_and_respects_the_depth_limit() {
        use rmpv::Value as V;
        let frame = V::Map(vec![
            (
                V::from("payload"),
                V::Map(vec![(
                    V::from("a"),
                    V::Array(vec![V::from(1), V::from("x")]),
                )]),
            ),
            (V::from("type"), V::from("OP_BATCH")),
        ]);
        let b = bytes(&frame);
        assert_eq!(frame_type(&b, 100), Some("OP_BATCH"));
        assert_eq!(
            frame_type(&b, 3),
            Some("OP_BATCH"),
            "map > map > array is depth 3"
        );
        assert_eq!(frame_type(&b, 2), None);
        assert_eq!(frame_type(&b[..b.len() - 1], 100), None, "truncated");
        let mut trailing = b.clone();
        trailing.push(0xc0);
        assert_eq!(frame_type(&trailing, 100), None, "trailing bytes");
        assert_eq!(
            frame_type(&bytes(&V::Array(vec![])), 100),
            None,
            "not a map"
        );
        let no_type = V::Map(vec![(V::from("x"), V::from(1))]);
        assert_eq!(frame_type(&bytes(&no_type), 100), None);
        let int_type = V::Map(vec![(V::from("type"), V::from(1))]);
        assert_eq!(frame_type(&bytes(&int_type), 100), None);
        assert_eq!(frame_type(&[0xc1], 100), None, "reserved marker");
        assert_eq!(frame_type(&[], 100), None);
    }
}
