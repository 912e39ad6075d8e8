//! Room rules without media: the waiting room, raise hand → grant publish, reconnect, capacity
//! and the close timer, all on a forced clock.

#![allow(clippy::unwrap_used)]

use nexus_sfu_core::{
    ClientMessage, Command, Grants, Identity, Input, JoinOptions, Output, ParticipantId,
    ParticipantState, Reply, RoomId, RoomKind, ServerMessage, SfuError, Shard, ShardConfig,
};
use std::time::{Duration, Instant};

struct Fixture {
    shard: Shard,
    now: Instant,
}

fn id(user: &str, room: &str, kind: RoomKind, admin: bool, publish: bool) -> Identity {
    Identity {
        user: user.into(),
        name: None,
        room: RoomId::new(room).unwrap(),
        kind,
        grants: Grants {
            publish,
            subscribe: true,
            admin,
        },
    }
}

impl Fixture {
    fn new() -> Self {
        let now = Instant::now();
        let config = ShardConfig::new(0, "127.0.0.1:9".parse().unwrap(), 1);
        Fixture {
            shard: Shard::new(now, config).unwrap(),
            now,
        }
    }

    fn join(&mut self, identity: Identity) -> ParticipantId {
        match self
            .shard
            .handle_command(
                self.now,
                Command::Join {
                    identity,
                    options: JoinOptions::default(),
                },
            )
            .unwrap()
        {
            Reply::Joined { participant } => participant,
            r => panic!("{r:?}"),
        }
    }

    fn say(&mut self, from: ParticipantId, message: ClientMessage) {
        self.shard
            .handle_command(self.now, Command::Message { from, message })
            .unwrap();
    }

    /// Drains the outputs: (recipient, message) pairs.
    fn signals(&mut self) -> Vec<(ParticipantId, ServerMessage)> {
        let mut out = vec![];
        loop {
            match self.shard.poll_output() {
                Output::Signal { to, message } => out.push((to, message)),
                Output::Timeout(_) => return out,
                Output::Transmit { .. } | Output::Relay { .. } => {}
            }
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.shard.handle_input(self.now, Input::Timeout);
    }
}

fn got(
    signals: &[(ParticipantId, ServerMessage)],
    to: ParticipantId,
    f: impl Fn(&ServerMessage) -> bool,
) -> bool {
    signals.iter().any(|(t, m)| *t == to && f(m))
}

#[test]
fn a_patient_waits_until_the_doctor_admits_them() {
    let mut fx = Fixture::new();
    let doctor = fx.join(id("doc", "c1", RoomKind::Consultation, true, true));
    let s = fx.signals();
    assert!(got(&s, doctor, |m| matches!(
        m,
        ServerMessage::Joined { .. }
    )));

    let patient = fx.join(id("pat", "c1", RoomKind::Consultation, false, true));
    assert_eq!(
        fx.shard.participant_state(patient),
        Some(ParticipantState::Waiting)
    );
    let s = fx.signals();
    assert!(got(&s, patient, |m| matches!(
        m,
        ServerMessage::Waiting { .. }
    )));
    assert!(got(
        &s,
        doctor,
        |m| matches!(m, ServerMessage::ParticipantWaiting { participant } if participant.id == patient)
    ));

    // While waiting, nothing but leave is accepted.
    fx.say(
        patient,
        ClientMessage::Chat {
            text: "hello?".into(),
        },
    );
    let s = fx.signals();
    assert!(got(
        &s,
        patient,
        |m| matches!(m, ServerMessage::Error { code, .. } if code == "waiting")
    ));
    assert!(!got(&s, doctor, |m| matches!(
        m,
        ServerMessage::Chat { .. }
    )));

    // The patient cannot admit themself; the doctor can.
    fx.say(
        patient,
        ClientMessage::Admit {
            participant: patient,
        },
    );
    assert_eq!(
        fx.shard.participant_state(patient),
        Some(ParticipantState::Waiting)
    );
    fx.say(
        doctor,
        ClientMessage::Admit {
            participant: patient,
        },
    );
    assert_eq!(
        fx.shard.participant_state(patient),
        Some(ParticipantState::Connected)
    );
    let s = fx.signals();
    assert!(got(
        &s,
        patient,
        |m| matches!(m, ServerMessage::Joined { participants, .. } if participants.iter().any(|p| p.id == doctor))
    ));
    assert!(got(
        &s,
        doctor,
        |m| matches!(m, ServerMessage::ParticipantJoined { participant } if participant.id == patient)
    ));
}

#[test]
fn the_healthcare_api_can_admit_a_user_in_advance() {
    let mut fx = Fixture::new();
    fx.join(id("doc", "c2", RoomKind::Consultation, true, true));
    let room = RoomId::new("c2").unwrap();
    fx.shard
        .handle_command(
            fx.now,
            Command::Admit {
                room,
                who: "pat".into(),
            },
        )
        .unwrap();
    let patient = fx.join(id("pat", "c2", RoomKind::Consultation, false, true));
    assert_eq!(
        fx.shard.participant_state(patient),
        Some(ParticipantState::Connected)
    );
}

#[test]
fn a_student_raises_a_hand_and_the_teacher_grants_publish() {
    let mut fx = Fixture::new();
    let teacher = fx.join(id("t", "class", RoomKind::Class, true, true));
    let student = fx.join(id("s", "class", RoomKind::Class, false, false));
    let other = fx.join(id("o", "class", RoomKind::Class, false, false));
    let s = fx.signals();
    assert!(got(&s, student, |m| matches!(
        m,
        ServerMessage::Joined {
            can_publish: false,
            ..
        }
    )));

    fx.say(student, ClientMessage::RaiseHand { raised: true });
    let s = fx.signals();
    assert!(got(
        &s,
        teacher,
        |m| matches!(m, ServerMessage::HandRaised { participant, raised: true } if *participant == student)
    ));

    // Another student cannot grant.
    fx.say(
        other,
        ClientMessage::GrantPublish {
            participant: student,
            granted: true,
        },
    );
    let s = fx.signals();
    assert!(got(
        &s,
        other,
        |m| matches!(m, ServerMessage::Error { code, .. } if code == "forbidden")
    ));

    fx.say(
        teacher,
        ClientMessage::GrantPublish {
            participant: student,
            granted: true,
        },
    );
    let s = fx.signals();
    for p in [teacher, student, other] {
        assert!(got(
            &s,
            p,
            |m| matches!(m, ServerMessage::PublishGranted { participant, granted: true } if *participant == student)
        ));
    }
}

#[test]
fn a_dropped_connection_can_resume_within_the_grace_and_is_gone_after() {
    let mut fx = Fixture::new();
    let a = fx.join(id("a", "class2", RoomKind::Class, false, true));
    let resume = fx
        .signals()
        .into_iter()
        .find_map(|(_, m)| match m {
            ServerMessage::Joined { resume_token, .. } => Some(resume_token),
            _ => None,
        })
        .unwrap();
    fx.shard
        .handle_command(fx.now, Command::Disconnected(a))
        .unwrap();
    assert!(matches!(
        fx.shard.participant_state(a),
        Some(ParticipantState::Reconnecting { .. })
    ));
    fx.advance(Duration::from_secs(10));
    let again = fx
        .shard
        .handle_command(
            fx.now,
            Command::Join {
                identity: id("a", "class2", RoomKind::Class, false, true),
                options: JoinOptions {
                    resume: Some(resume),
                    auto_subscribe: None,
                },
            },
        )
        .unwrap();
    assert_eq!(again, Reply::Joined { participant: a });
    assert_eq!(
        fx.shard.participant_state(a),
        Some(ParticipantState::Connected)
    );

    // A wrong token does not resume anything.
    let wrong = fx.shard.handle_command(
        fx.now,
        Command::Join {
            identity: id("a", "class2", RoomKind::Class, false, true),
            options: JoinOptions {
                resume: Some("nope".into()),
                auto_subscribe: None,
            },
        },
    );
    assert_eq!(wrong, Err(SfuError::NoSuchSession));

    // Dropped again and not back within 30 s: gone.
    fx.shard
        .handle_command(fx.now, Command::Disconnected(a))
        .unwrap();
    fx.advance(Duration::from_secs(29));
    assert!(fx.shard.participant_state(a).is_some());
    fx.advance(Duration::from_secs(2));
    assert_eq!(fx.shard.participant_state(a), None);
}

#[test]
fn consultations_hold_eight_and_kinds_do_not_mix() {
    let mut fx = Fixture::new();
    for i in 0..8 {
        fx.join(id(
            &format!("u{i}"),
            "c3",
            RoomKind::Consultation,
            true,
            true,
        ));
    }
    let ninth = fx.shard.handle_command(
        fx.now,
        Command::Join {
            identity: id("u9", "c3", RoomKind::Consultation, true, true),
            options: JoinOptions::default(),
        },
    );
    assert_eq!(ninth, Err(SfuError::RoomFull { max: 8 }));
    let class = fx.shard.handle_command(
        fx.now,
        Command::Join {
            identity: id("x", "c3", RoomKind::Class, true, true),
            options: JoinOptions::default(),
        },
    );
    assert_eq!(class, Err(SfuError::RoomKindMismatch));
}

#[test]
fn an_empty_room_closes_after_its_grace_period_and_a_joiner_keeps_it_open() {
    let mut fx = Fixture::new();
    let room = RoomId::new("c4").unwrap();
    let a = fx.join(id("a", "c4", RoomKind::Class, false, true));
    fx.say(a, ClientMessage::Leave);
    assert!(
        fx.signals()
            .iter()
            .any(|(t, m)| *t == a && matches!(m, ServerMessage::Leave { .. }))
    );
    // The shard's next timeout is the close deadline.
    match fx.shard.poll_output() {
        Output::Timeout(t) => assert_eq!(t, fx.now + Duration::from_secs(30)),
        o => panic!("{o:?}"),
    }
    fx.advance(Duration::from_secs(20));
    assert!(fx.shard.has_room(&room));
    // Someone comes back: the timer is off.
    let b = fx.join(id("b", "c4", RoomKind::Class, false, true));
    fx.advance(Duration::from_secs(20));
    assert!(fx.shard.has_room(&room));
    fx.say(b, ClientMessage::Leave);
    fx.advance(Duration::from_secs(30));
    assert!(!fx.shard.has_room(&room));
}

#[test]
fn close_room_and_shutdown_tell_participants_to_leave() {
    let mut fx = Fixture::new();
    let a = fx.join(id("a", "c5", RoomKind::Class, false, true));
    let b = fx.join(id("b", "c6", RoomKind::Class, false, true));
    fx.signals();
    fx.shard
        .handle_command(fx.now, Command::CloseRoom(RoomId::new("c5").unwrap()))
        .unwrap();
    let s = fx.signals();
    assert!(got(&s, a, |m| matches!(
        m,
        ServerMessage::Leave {
            reason: nexus_sfu_core::LeaveReason::RoomClosed
        }
    )));
    fx.shard.handle_command(fx.now, Command::Shutdown).unwrap();
    let s = fx.signals();
    assert!(got(&s, b, |m| matches!(
        m,
        ServerMessage::Leave {
            reason: nexus_sfu_core::LeaveReason::ServerShutdown
        }
    )));
    let late = fx.shard.handle_command(
        fx.now,
        Command::Join {
            identity: id("c", "c6", RoomKind::Class, false, true),
            options: JoinOptions::default(),
        },
    );
    assert_eq!(late, Err(SfuError::ShuttingDown));
}
