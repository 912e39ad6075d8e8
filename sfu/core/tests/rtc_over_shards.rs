//! A class whose room-protocol (`/rtc`) members are on two shards: the teacher on the room's
//! shard, students that only receive on the other one (where the driver places them, like
//! WHEP subscribers). Their signaling, media and publishing after a grant work as on one shard.
//! str0m peers over a simulated network, forced clock.

#![allow(clippy::unwrap_used)]

#[macro_use]
mod common;

use common::{Net, all_grants, identity};
use nexus_sfu_core::{
    ClientMessage, Command, Grants, Identity, JoinOptions, ParticipantId, ParticipantState,
    RoomKind, ServerMessage, TrackId, TrackKind,
};
use std::time::Duration;
use str0m::format::Codec;

const ROOM: &str = "class-rtc";

fn student() -> Grants {
    Grants {
        publish: false,
        subscribe: true,
        admin: false,
    }
}

fn class(user: &str, grants: Grants) -> Identity {
    identity(user, ROOM, RoomKind::Class, grants)
}

fn id(net: &Net, i: usize) -> ParticipantId {
    net.clients[i].participant.unwrap()
}

/// Publishes 30 frames a second for `secs` from `publisher` like an encoder: a keyframe when it
/// was asked for one, otherwise every 10 s (frame 0 is one).
fn stream(net: &mut Net, publisher: usize, from: u64, secs: u64) {
    for n in from..from + secs * 30 {
        net.publish_answering(publisher, n);
        net.run(Duration::from_millis(33));
    }
}

/// Whether each video frame client `i` received, in order, was a keyframe.
fn video(net: &Net, i: usize) -> Vec<bool> {
    net.clients[i]
        .received
        .iter()
        .filter(|d| d.params.spec().codec == Codec::Vp8)
        .map(|d| d.is_keyframe())
        .collect()
}

fn joined(net: &Net, i: usize) -> (Vec<ParticipantId>, Vec<(TrackId, ParticipantId)>, bool) {
    let all = net.signals_of(i, |m| match m {
        ServerMessage::Joined {
            participants,
            tracks,
            can_publish,
            ..
        } => Some((
            participants.iter().map(|p| p.id).collect(),
            tracks.iter().map(|t| (t.id, t.participant)).collect(),
            *can_publish,
        )),
        _ => None,
    });
    all.into_iter().last().expect("no `joined`")
}

/// A teacher on shard 0 who publishes audio and video over the room protocol and streams a
/// second (its first keyframe included) before anyone else is there.
fn teacher_streaming(net: &mut Net) -> usize {
    let teacher = net.join_on(class("teacher", all_grants()), 0);
    net.rtc_offer(teacher, true);
    net.run(Duration::from_secs(1));
    assert!(
        net.clients[teacher].connected,
        "the teacher did not connect"
    );
    stream(net, teacher, 0, 1);
    teacher
}

#[test]
fn a_student_on_the_second_shard_sees_the_class_and_gets_the_teacher_from_a_keyframe() {
    let mut net = Net::with_shards(2);
    let teacher = teacher_streaming(&mut net);
    let ana = net.join_on(class("ana", student()), 1);
    assert_eq!(id(&net, ana).shard(), 1);

    // The first message is the whole picture: the teacher and its two tracks, from shard 0.
    assert!(matches!(
        net.clients[ana].signals.first(),
        Some(ServerMessage::Joined { .. })
    ));
    let (people, tracks, can_publish) = joined(&net, ana);
    assert_eq!(people, vec![id(&net, teacher)]);
    assert_eq!(tracks.len(), 2);
    assert!(tracks.iter().all(|(_, owner)| *owner == id(&net, teacher)));
    assert!(!can_publish);
    let ana_id = id(&net, ana);
    let told = net.signals_of(teacher, |m| match m {
        ServerMessage::ParticipantJoined { participant } => Some(participant.id),
        _ => None,
    });
    assert_eq!(told, vec![ana_id]);

    // Her first offer (a data channel only) subscribes her to both tracks; her shard's mirrors
    // carry them, and the keyframe request goes to the teacher's shard.
    net.rtc_offer(ana, false);
    net.run(Duration::from_millis(500));
    assert!(net.clients[ana].connected, "ana did not connect to shard 1");
    let subscribed = net.signals_of(ana, |m| match m {
        ServerMessage::Subscribed { track, .. } => Some(*track),
        _ => None,
    });
    assert_eq!(subscribed.len(), 2, "{:?}", net.clients[ana].signals);
    stream(&mut net, teacher, 30, 1);
    let frames = video(&net, ana);
    assert!(frames.len() >= 20, "ana got {} video frames", frames.len());
    assert!(frames[0], "ana's first video frame is not a keyframe");
    assert!(
        net.audio_frames(ana) > 20,
        "ana got {} audio frames",
        net.audio_frames(ana)
    );
    // Fanned out by shard 1; asked of the publisher by shard 0 only.
    assert!(net.shards[1].stats().frames_forwarded > 40);
    assert_eq!(net.shards[1].stats().keyframe_requests, 0);
    assert!(net.clients[teacher].keyframe_requests >= 1);

    // Room events cross the shards both ways: chat, and the teacher's data channel.
    net.say(ana, ClientMessage::Chat { text: "hi".into() });
    let chat = |i| {
        net.signals_of(i, |m| match m {
            ServerMessage::Chat { from, text, .. } => Some((*from, text.clone())),
            _ => None,
        })
    };
    assert_eq!(chat(teacher), vec![(ana_id, "hi".to_string())]);
    assert_eq!(chat(ana), vec![(ana_id, "hi".to_string())]);
    assert!(net.chat_channel(teacher, b"whiteboard: circle"));
    net.run(Duration::from_millis(100));
    assert_eq!(
        net.clients[ana].channel_data,
        vec![b"whiteboard: circle".to_vec()]
    );

    // The teacher mutes the camera: ana is told, and a later joiner on shard 1 sees it muted.
    let camera = net
        .signals_of(teacher, |m| match m {
            ServerMessage::TrackPublished { track } if track.kind == TrackKind::Video => {
                Some(track.id)
            }
            _ => None,
        })
        .pop()
        .unwrap();
    net.say(
        teacher,
        ClientMessage::Mute {
            track: camera,
            muted: true,
        },
    );
    assert!(
        net.signals_of(ana, |m| match m {
            ServerMessage::TrackMuted { track, muted } => Some((*track, *muted)),
            _ => None,
        })
        .contains(&(camera, true))
    );
    let ben = net.join_on(class("ben", student()), 1);
    let muted = net.signals_of(ben, |m| match m {
        ServerMessage::Joined { tracks, .. } => {
            Some(tracks.iter().find(|t| t.id == camera).map(|t| t.muted))
        }
        _ => None,
    });
    assert_eq!(muted, vec![Some(true)]);
    // Students who only receive are quiet: ben is listed the teacher, not ana.
    let (people, _, _) = joined(&net, ben);
    assert_eq!(people, vec![id(&net, teacher)], "ben sees the teacher only");

    // Ana leaves: the teacher is told.
    net.say(ana, ClientMessage::Leave);
    let left = net.signals_of(teacher, |m| match m {
        ServerMessage::ParticipantLeft { participant } => Some(*participant),
        _ => None,
    });
    assert_eq!(left, vec![ana_id]);
}

#[test]
fn a_student_on_the_second_shard_is_granted_publish_and_reaches_the_class_on_both_shards() {
    let mut net = Net::with_shards(2);
    let teacher = teacher_streaming(&mut net);
    let ana = net.join_on(class("ana", student()), 1);
    let ben = net.join_on(class("ben", student()), 0);
    let chen = net.join_on(class("chen", student()), 1);
    for s in [ana, ben, chen] {
        net.rtc_offer(s, false);
    }
    net.run(Duration::from_secs(1));
    let (ana_id, teacher_id) = (id(&net, ana), id(&net, teacher));
    // Chen's `joined` lists the teacher only: the other students are quiet. The teacher
    // (an admin) was told of each of them, on both shards.
    let (people, _, _) = joined(&net, chen);
    assert_eq!(people, vec![teacher_id]);
    let mut told = net.signals_of(teacher, |m| match m {
        ServerMessage::ParticipantJoined { participant } => Some(participant.id),
        _ => None,
    });
    told.sort();
    let mut students = vec![ana_id, id(&net, ben), id(&net, chen)];
    students.sort();
    assert_eq!(told, students);
    for i in [ana, ben, chen] {
        let joins = net.signals_of(i, |m| match m {
            ServerMessage::ParticipantJoined { .. } => Some(()),
            _ => None,
        });
        assert!(joins.is_empty(), "student {i} was told of another student");
    }

    // Ana raises her hand: the teacher (other shard) and ana herself see it, not the others.
    net.say(ana, ClientMessage::RaiseHand { raised: true });
    for i in [teacher, ana, ben, chen] {
        let hands = net.signals_of(i, |m| match m {
            ServerMessage::HandRaised {
                participant,
                raised: true,
            } => Some(*participant),
            _ => None,
        });
        let want = if i == teacher || i == ana {
            vec![ana_id]
        } else {
            vec![]
        };
        assert_eq!(hands, want, "client {i}");
    }
    // The teacher grants; ana's shard changes her and tells everyone.
    net.say(
        teacher,
        ClientMessage::GrantPublish {
            participant: ana_id,
            granted: true,
        },
    );
    for i in [teacher, ana, ben, chen] {
        let grants = net.signals_of(i, |m| match m {
            ServerMessage::PublishGranted {
                participant,
                granted: true,
            } => Some(*participant),
            _ => None,
        });
        assert_eq!(grants, vec![ana_id], "client {i}");
    }
    // Now a publisher, she is introduced to the other students (once), not again to the
    // teacher.
    for i in [ben, chen] {
        let joins = net.signals_of(i, |m| match m {
            ServerMessage::ParticipantJoined { participant } => Some(participant.id),
            _ => None,
        });
        assert_eq!(joins, vec![ana_id], "client {i}");
    }
    let told_again = net.signals_of(teacher, |m| match m {
        ServerMessage::ParticipantJoined { participant } if participant.id == ana_id => Some(()),
        _ => None,
    });
    assert_eq!(told_again.len(), 1);

    // She renegotiates to publish on her own shard; her tracks reach the class on both.
    net.rtc_offer(ana, true);
    net.run(Duration::from_millis(500));
    let published = net.signals_of(teacher, |m| match m {
        ServerMessage::TrackPublished { track } if track.participant == ana_id => Some(track.id),
        _ => None,
    });
    assert_eq!(
        published.len(),
        2,
        "the teacher saw ana's tracks: {published:?}"
    );
    assert!(
        published.iter().all(|t| t.0 >> 40 == 1),
        "published on shard 1"
    );
    let before: Vec<usize> = [teacher, ben, chen]
        .iter()
        .map(|&i| video(&net, i).len())
        .collect();
    // Both publish for 2 s.
    for n in 60..120 {
        net.publish_answering(ana, n + 1);
        net.publish_answering(teacher, n);
        net.run(Duration::from_millis(33));
    }
    assert!(
        net.clients[ana].keyframe_requests >= 1,
        "nobody asked ana for a keyframe"
    );
    for (k, &i) in [teacher, ben, chen].iter().enumerate() {
        // The teacher receives ana only; ben and chen both the teacher and ana.
        let got = video(&net, i).len() - before[k];
        let want = if i == teacher { 40 } else { 80 };
        assert!(got >= want, "client {i} got {got} video frames");
    }
    assert!(
        net.audio_frames(teacher) > 50,
        "the teacher does not hear ana"
    );

    // Revoked: her tracks go away everywhere.
    net.say(
        teacher,
        ClientMessage::GrantPublish {
            participant: ana_id,
            granted: false,
        },
    );
    let gone = net.signals_of(ben, |m| match m {
        ServerMessage::TrackUnpublished { track } => Some(*track),
        _ => None,
    });
    assert_eq!(gone.len(), 2);

    // Having been introduced, her departure is told to everyone; a quiet student's only to
    // the teacher.
    net.say(ana, ClientMessage::Leave);
    net.say(chen, ClientMessage::Leave);
    let chen_id = id(&net, chen);
    for i in [teacher, ben] {
        let mut left = net.signals_of(i, |m| match m {
            ServerMessage::ParticipantLeft { participant } => Some(*participant),
            _ => None,
        });
        left.sort();
        let mut want = if i == teacher {
            vec![ana_id, chen_id]
        } else {
            vec![ana_id]
        };
        want.sort();
        assert_eq!(left, want, "client {i}");
    }
}

#[test]
fn a_student_on_the_second_shard_resumes_there_after_a_network_change() {
    let mut net = Net::with_shards(2);
    let teacher = teacher_streaming(&mut net);
    let ana = net.join_on(class("ana", student()), 1);
    net.rtc_offer(ana, false);
    net.run(Duration::from_millis(500));
    let ana_id = id(&net, ana);
    let token = net
        .signals_of(ana, |m| match m {
            ServerMessage::Joined { resume_token, .. } => Some(resume_token.clone()),
            _ => None,
        })
        .pop()
        .unwrap();
    let options = JoinOptions {
        resume: Some(token),
        auto_subscribe: None,
    };
    // The token names her shard, so that the driver sends the resume there.
    assert_eq!(options.resume_shard(), Some(1));

    net.shards[1]
        .handle_command(net.now, Command::Disconnected(ana_id))
        .unwrap();
    assert!(matches!(
        net.shards[1].participant_state(ana_id),
        Some(ParticipantState::Reconnecting { .. })
    ));
    // Media goes on meanwhile.
    stream(&mut net, teacher, 30, 1);
    let during = video(&net, ana).len();
    assert!(during >= 20, "{during} frames while reconnecting");
    net.clients[ana].signals.clear();
    let again = net
        .try_join_on(class("ana", student()), 1, options)
        .unwrap();
    assert_eq!(again, ana);
    assert_eq!(id(&net, ana), ana_id);
    assert_eq!(
        net.shards[1].participant_state(ana_id),
        Some(ParticipantState::Connected)
    );
    let (people, tracks, _) = joined(&net, ana);
    assert_eq!(people, vec![id(&net, teacher)]);
    assert_eq!(tracks.len(), 2);
    stream(&mut net, teacher, 60, 1);
    assert!(video(&net, ana).len() >= during + 25);
}

#[test]
fn students_who_open_the_class_on_the_second_shard_meet_the_teacher_who_comes_later() {
    // The room is opened on shard 1 first; shard 0 opens it when the teacher comes, and each
    // learns the other's members from the other's snapshot.
    let mut net = Net::with_shards(2);
    let ana = net.join_on(class("ana", student()), 1);
    let (people, tracks, _) = joined(&net, ana);
    assert!(people.is_empty() && tracks.is_empty());
    net.rtc_offer(ana, false);
    net.run(Duration::from_millis(300));
    let teacher = net.join_on(class("teacher", all_grants()), 0);
    let (people, _, _) = joined(&net, teacher);
    assert_eq!(people, vec![id(&net, ana)]);
    let joined_ana = net.signals_of(ana, |m| match m {
        ServerMessage::ParticipantJoined { participant } => Some(participant.id),
        _ => None,
    });
    assert_eq!(joined_ana, vec![id(&net, teacher)]);

    // The teacher publishes; ana is subscribed as the tracks appear and gets a keyframe first.
    net.rtc_offer(teacher, true);
    net.run(Duration::from_secs(1));
    stream(&mut net, teacher, 1, 2);
    let frames = video(&net, ana);
    assert!(frames.len() >= 40, "ana got {} video frames", frames.len());
    assert!(frames[0], "ana's first video frame is not a keyframe");
    // One room on the node.
    assert_eq!(net.stats().rooms, 1);
}

#[test]
fn a_shard_that_hears_nothing_from_the_others_sends_joined_after_a_second() {
    // The shard that opens the room waits for the others' part of it before `joined`; if a
    // relay queue dropped the exchange, the member is not left without an answer.
    let mut net = Net::with_shards(2);
    net.join_on(class("teacher", all_grants()), 0);
    net.drop_relays = true;
    let ana = net.join_on(class("ana", student()), 1);
    net.run(Duration::from_millis(900));
    assert!(
        net.clients[ana].signals.is_empty(),
        "joined before the wait was over"
    );
    net.run(Duration::from_millis(200));
    let (people, _, _) = joined(&net, ana);
    // Only what the shard knows (the teacher's snapshot was lost).
    assert!(people.is_empty());
    assert_eq!(net.clients[ana].signals.len(), 1);
}

#[test]
fn a_consultation_and_a_class_of_the_same_name_on_two_shards_stay_apart() {
    // Only classes span shards; a consultation on one shard tells a class of the same name on
    // another nothing, and hears nothing from it.
    let mut net = Net::with_shards(2);
    let doctor = net.join_on(
        identity("doc", ROOM, RoomKind::Consultation, all_grants()),
        0,
    );
    net.rtc_offer(doctor, true);
    net.run(Duration::from_millis(500));
    let ana = net.join_on(class("ana", student()), 1);
    let (people, tracks, _) = joined(&net, ana);
    assert!(
        people.is_empty() && tracks.is_empty(),
        "{people:?} {tracks:?}"
    );
    net.say(ana, ClientMessage::Chat { text: "hi".into() });
    assert!(
        net.signals_of(doctor, |m| match m {
            ServerMessage::ParticipantJoined { .. } | ServerMessage::Chat { .. } => Some(()),
            _ => None,
        })
        .is_empty()
    );
}
