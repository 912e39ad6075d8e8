//! What a recipient reads: the text of an alert per channel (pure).
//!
//! SMS text follows the wireless-emergency-alert budget of [`SMS_MAX_CHARS`] characters:
//! a prefix for tests, exercises, drafts, updates and cancellations, the headline (or event), the area, then the
//! instruction. When it does not fit, the instruction is cut first, then the area, then the
//! headline; a cut part ends with `…`. E-mail carries the full text.

use nexus_cap::{Alert, Info, MsgType, Status};

/// Longest SMS text, in characters (the 360-character WEA limit).
pub const SMS_MAX_CHARS: usize = 360;

/// The info block a message is made from: the first in `language`, else the first.
fn info<'a>(alert: &'a Alert, language: Option<&str>) -> Option<&'a Info> {
    language
        .and_then(|l| {
            alert
                .info
                .iter()
                .find(|i| i.language_or_default().eq_ignore_ascii_case(l))
        })
        .or(alert.info.first())
}

/// `TEST: `, `EXERCISE: ` or `DRAFT: ` for alerts that are not real (so an allowlisted
/// recipient never mistakes one for an emergency), then `UPDATE: ` or `CANCELLED: `.
fn prefix(alert: &Alert) -> String {
    let status = match alert.status {
        Status::Test => "TEST: ",
        Status::Exercise => "EXERCISE: ",
        Status::Draft => "DRAFT: ",
        _ => "",
    };
    let kind = match alert.msg_type {
        MsgType::Update => "UPDATE: ",
        MsgType::Cancel => "CANCELLED: ",
        _ => "",
    };
    format!("{status}{kind}")
}

fn headline(alert: &Alert, info: Option<&Info>) -> String {
    info.and_then(|i| i.headline.clone().filter(|h| !h.trim().is_empty()))
        .or_else(|| info.map(|i| i.event.clone()))
        .unwrap_or_else(|| alert.identifier.clone())
        .trim()
        .to_string()
}

fn areas(info: Option<&Info>) -> String {
    info.map(|i| {
        i.area
            .iter()
            .map(|a| a.area_desc.trim())
            .filter(|d| !d.is_empty())
            .collect::<Vec<_>>()
            .join("; ")
    })
    .unwrap_or_default()
}

fn cut(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    if max == 0 {
        return String::new();
    }
    let mut out: String = text.chars().take(max - 1).collect();
    out.push('…');
    out
}

/// The SMS text of `alert`: at most [`SMS_MAX_CHARS`] characters.
///
/// ```
/// let alert: nexus_cap::Alert = serde_json::from_value(serde_json::json!({
///     "identifier": "F1", "sender": "a@b", "sent": "2024-06-12T14:57:00-07:00",
///     "status": "Actual", "msg_type": "Update", "scope": "Public",
///     "info": [{"category": ["Met"], "event": "Flood", "urgency": "Immediate",
///               "severity": "Severe", "certainty": "Observed",
///               "headline": "Flood warning", "instruction": "Move to higher ground.",
///               "area": [{"area_desc": "Riverside"}]}]})).unwrap();
/// assert_eq!(nexus_alert_delivery::sms_text(&alert, None),
///            "UPDATE: Flood warning. Area: Riverside. Move to higher ground.");
/// ```
pub fn sms_text(alert: &Alert, language: Option<&str>) -> String {
    let info = info(alert, language);
    let prefix = prefix(alert);
    let head = headline(alert, info);
    let area = areas(info);
    let instruction = info
        .and_then(|i| i.instruction.as_deref())
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default();
    let area_part = if area.is_empty() {
        String::new()
    } else {
        format!(" Area: {area}.")
    };
    let instruction_part = if instruction.is_empty() {
        String::new()
    } else {
        format!(" {instruction}")
    };
    let len = |s: &str| s.chars().count();
    let budget = SMS_MAX_CHARS;
    // Headline (with its prefix and full stop) gets what it needs up to the whole budget.
    let head_full = format!("{prefix}{head}.");
    let head_part = cut(&head_full, budget);
    let left = budget - len(&head_part);
    let area_part = cut(&area_part, left);
    let left = left - len(&area_part);
    let instruction_part = cut(&instruction_part, left);
    format!("{head_part}{area_part}{instruction_part}")
}

/// An e-mail's subject and plain-text body; `key` is the delivery's idempotency key,
/// printed as the message's reference.
pub fn email_text(alert: &Alert, language: Option<&str>, key: &str) -> (String, String) {
    let info = info(alert, language);
    let head = headline(alert, info);
    let severity = info.map(|i| i.severity.as_str()).unwrap_or("Unknown");
    let subject = format!("{}[{severity}] {head}", prefix(alert));
    let mut body = format!("{}{head}\n\n", prefix(alert));
    let area = areas(info);
    if !area.is_empty() {
        body.push_str(&format!("Area: {area}\n"));
    }
    if let Some(i) = info {
        body.push_str(&format!(
            "Event: {} (urgency {}, severity {}, certainty {})\n",
            i.event.trim(),
            i.urgency.as_str(),
            i.severity.as_str(),
            i.certainty.as_str()
        ));
        if let Some(e) = i.expires {
            body.push_str(&format!("Expires: {e}\n"));
        }
        if let Some(d) = i
            .description
            .as_deref()
            .map(str::trim)
            .filter(|d| !d.is_empty())
        {
            body.push_str(&format!("\n{d}\n"));
        }
        if let Some(d) = i
            .instruction
            .as_deref()
            .map(str::trim)
            .filter(|d| !d.is_empty())
        {
            body.push_str(&format!("\nWhat to do: {d}\n"));
        }
    }
    body.push_str(&format!(
        "\nSent by {} at {}. CAP identifier {}.\nDelivery reference: {key}\n",
        alert.sender, alert.sent, alert.identifier
    ));
    (subject, body)
}

/// What a user's personal gateway channel (`user#<id>`) receives for a delivery: JSON with
/// `type: "alert"`, the delivery's idempotency key (`key`, so an app that hears it twice —
/// sent again after a crash — shows it once), the alert's ids and a summary of the info
/// block in the recipient's language.
pub fn realtime_message(message: &crate::channel::Outgoing<'_>) -> serde_json::Value {
    let alert = message.alert;
    let info = info(alert, None);
    serde_json::json!({
        "type": "alert",
        "key": message.key,
        "alert_id": message.alert_id,
        "identifier": alert.identifier,
        "sender": alert.sender,
        "sent": alert.sent.to_string(),
        "msg_type": alert.msg_type.as_str(),
        "status": alert.status.as_str(),
        "event": info.map(|i| i.event.clone()),
        "headline": format!("{}{}", prefix(alert), headline(alert, info)),
        "severity": info.map(|i| i.severity.as_str()),
        "urgency": info.map(|i| i.urgency.as_str()),
        "area": areas(info),
        "instruction": info.and_then(|i| i.instruction.clone()),
        "expires": alert.expires_at().map(|e| e.to_string()),
        "links": {"cap": format!("/api/v1/alerts/{}", message.alert_id)},
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(headline: &str, area: &str, instruction: &str) -> Alert {
        serde_json::from_value(serde_json::json!({
            "identifier": "F1", "sender": "a@b", "sent": "2024-06-12T14:57:00-07:00",
            "status": "Actual", "msg_type": "Alert", "scope": "Public",
            "info": [{"category": ["Met"], "event": "Flood", "urgency": "Immediate",
                      "severity": "Severe", "certainty": "Observed",
                      "headline": headline, "instruction": instruction,
                      "area": [{"area_desc": area}]}]}))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn long_instructions_are_cut_first_then_areas() {
        let long = "Leave now. ".repeat(60);
        let text = sms_text(&alert("Flood warning", "Riverside", &long), None);
        assert_eq!(text.chars().count(), SMS_MAX_CHARS);
        assert!(text.starts_with("Flood warning. Area: Riverside. Leave now."));
        assert!(text.ends_with('…'));

        let text = sms_text(&alert("Flood warning", &"Village ".repeat(80), "Go."), None);
        assert_eq!(text.chars().count(), SMS_MAX_CHARS);
        assert!(!text.contains("Go."), "no room left for the instruction");

        let text = sms_text(&alert(&"Ü".repeat(500), "x", "y"), None);
        assert_eq!(text.chars().count(), SMS_MAX_CHARS, "characters, not bytes");
    }

    #[test]
    fn exercises_say_so_before_anything_else() {
        let mut a = alert("Flood warning", "Riverside", "Go up.");
        a.status = Status::Exercise;
        a.msg_type = MsgType::Update;
        assert!(sms_text(&a, None).starts_with("EXERCISE: UPDATE: Flood warning."));
        assert!(
            email_text(&a, None, "k")
                .0
                .starts_with("EXERCISE: UPDATE: [Severe]")
        );
    }

    #[test]
    fn email_carries_the_reference() {
        let (subject, body) =
            email_text(&alert("Flood warning", "Riverside", "Go up."), None, "k-1");
        assert_eq!(subject, "[Severe] Flood warning");
        assert!(body.contains("Delivery reference: k-1"));
        assert!(body.contains("What to do: Go up."));
    }

    #[test]
    fn the_personal_channel_message_carries_the_key_and_says_what_it_is() {
        let mut a = alert("Flood warning", "Riverside", "Go up.");
        a.status = Status::Exercise;
        let m = crate::channel::Outgoing {
            key: "k1",
            address: "user#7",
            alert: &a,
            alert_id: "a1",
            recipient_id: "user#7",
            unsubscribe_url: None,
        };
        let v = realtime_message(&m);
        assert_eq!(v["type"], "alert");
        assert_eq!(v["key"], "k1");
        assert_eq!(v["alert_id"], "a1");
        assert_eq!(v["headline"], "EXERCISE: Flood warning");
        assert_eq!(v["area"], "Riverside");
        assert_eq!(v["instruction"], "Go up.");
        assert_eq!(v["links"]["cap"], "/api/v1/alerts/a1");
    }
}
