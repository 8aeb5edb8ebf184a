//! Merging the engine's merges: several frames of a pull that arrived
//! together cost one storage transaction instead of one each.

use crate::Output;
use topgun_core::wire::WireRecord;

/// Merges each run of [`Output::ApplyRemote`]s of one map, separated only
/// by frames to send and timer changes, into one apply placed where the
/// run ends: the requests go out first, and the merge costs one storage
/// transaction instead of one per frame. Any other output ends a run, so
/// everything that must follow a merge (a completed pull, a state, an
/// ack's bookkeeping) still does. Reordering a merge after sends is sound:
/// LWW merges commute, and nothing sent depends on them.
pub fn coalesce(outputs: Vec<Output>) -> Vec<Output> {
    let mut out = Vec::with_capacity(outputs.len());
    let mut run: Option<(String, Vec<(String, WireRecord)>)> = None;
    let flush = |run: &mut Option<(String, Vec<(String, WireRecord)>)>, out: &mut Vec<Output>| {
        if let Some((map, records)) = run.take() {
            out.push(Output::ApplyRemote { map, records });
        }
    };
    for output in outputs {
        match output {
            Output::ApplyRemote { map, records } => match &mut run {
                Some((run_map, run_records)) if *run_map == map => run_records.extend(records),
                _ => {
                    flush(&mut run, &mut out);
                    run = Some((map, records));
                }
            },
            output if may_overtake_merges(&output) => out.push(output),
            output => {
                flush(&mut run, &mut out);
                out.push(output);
            }
        }
    }
    flush(&mut run, &mut out);
    out
}

/// Whether `output` may be carried out before merges that precede it:
/// frames to send and timer changes (nothing sent depends on a merge).
/// Everything else must stay after every merge before it. (A merge itself
/// is not asked: merges start in order and end in order; two in flight
/// that share a key write it in the order their key locks allow, and the
/// LWW rule makes the stored result the same either way.)
pub(crate) fn may_overtake_merges(output: &Output) -> bool {
    match output {
        Output::Send(_) | Output::SetTimer { .. } | Output::CancelTimer(_) => true,
        Output::ApplyRemote { .. }
        | Output::Connect
        | Output::Disconnect(_)
        | Output::LoadPending { .. }
        | Output::MarkSynced(_)
        | Output::ResetMap(_)
        | Output::ObserveTimestamp(_)
        | Output::State(_)
        | Output::Event(_)
        | Output::Fetched { .. } => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ConnectionState, SyncEvent, TimerKind};
    use topgun_core::wire::{Message, Ping};
    use topgun_core::Timestamp;

    fn apply(map: &str, keys: &[&str]) -> Output {
        Output::ApplyRemote {
            map: map.into(),
            records: keys
                .iter()
                .map(|k| {
                    (
                        (*k).to_owned(),
                        WireRecord::tombstone(Timestamp {
                            millis: 1,
                            counter: 0,
                            node_id: "s".into(),
                        }),
                    )
                })
                .collect(),
        }
    }

    fn send() -> Output {
        Output::Send(Message::Ping(Ping { timestamp: 1 }))
    }

    fn keys(output: &Output) -> Vec<String> {
        match output {
            Output::ApplyRemote { records, .. } => records.iter().map(|(k, _)| k.clone()).collect(),
            other => panic!("not an apply: {other:?}"),
        }
    }

    #[test]
    fn applies_of_one_map_merge_after_the_sends_between_them() {
        let out = coalesce(vec![
            apply("m", &["a"]),
            send(),
            apply("m", &["b"]),
            Output::SetTimer {
                timer: TimerKind::PullTimeout,
                after_ms: 5,
            },
            apply("m", &["c"]),
        ]);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0], send());
        assert!(matches!(out[1], Output::SetTimer { .. }));
        assert_eq!(keys(&out[2]), ["a", "b", "c"]);
    }

    #[test]
    fn another_map_or_any_other_output_ends_a_run() {
        let out = coalesce(vec![
            apply("m", &["a"]),
            apply("n", &["b"]),
            Output::Event(SyncEvent::PullComplete("n".into())),
            apply("n", &["c"]),
            Output::State(ConnectionState::Online),
        ]);
        assert_eq!(out.len(), 5);
        assert_eq!(keys(&out[0]), ["a"]);
        assert_eq!(keys(&out[1]), ["b"]);
        assert_eq!(out[2], Output::Event(SyncEvent::PullComplete("n".into())));
        assert_eq!(keys(&out[3]), ["c"]);
        assert_eq!(out[4], Output::State(ConnectionState::Online));
    }

    #[test]
    fn nothing_is_dropped() {
        let input = vec![
            Output::Connect,
            Output::Disconnect("x".into()),
            Output::LoadPending {
                after: None,
                limit: 3,
            },
            Output::MarkSynced(vec![1]),
            Output::ResetMap("m".into()),
            Output::CancelTimer(TimerKind::Ping),
        ];
        assert_eq!(coalesce(input.clone()), input);
    }
}
