//! The API server's checks on the two kinds failover writes: a Lease's spec (types, a positive
//! duration, MicroTime timestamps with exactly six fractional digits, as metav1.MicroTime
//! parses them) and a pod patch (JSON merge patch, RFC 7386; label syntax). The double refuses a
//! pod patch that changes anything but labels and annotations: the agent has no business there.

use serde_json::{Map, Value};

/// RFC 7386: objects merge key by key, `null` removes a key, anything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    let target = target.as_object_mut().expect("made an object");
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

fn micro_time(text: &str) -> bool {
    // 2006-01-02T15:04:05.000000Z07:00
    let bytes = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        bytes
            .get(range)
            .is_some_and(|b| b.iter().all(u8::is_ascii_digit))
    };
    let at = |i: usize, c: u8| bytes.get(i) == Some(&c);
    let zone = &text.get(26..).unwrap_or("");
    digits(0..4)
        && at(4, b'-')
        && digits(5..7)
        && at(7, b'-')
        && digits(8..10)
        && at(10, b'T')
        && digits(11..13)
        && at(13, b':')
        && digits(14..16)
        && at(16, b':')
        && digits(17..19)
        && at(19, b'.')
        && digits(20..26)
        && (*zone == "Z" || (zone.len() == 6 && (zone.starts_with('+') || zone.starts_with('-'))))
}

/// A Lease's spec as the API server validates it; the error is its message.
pub fn check_lease(lease: &Value) -> Result<(), String> {
    let spec = &lease["spec"];
    if !(spec.is_null() || spec.is_object()) {
        return Err("spec: must be an object".into());
    }
    if let Some(holder) = spec.get("holderIdentity") {
        if !holder.is_string() && !holder.is_null() {
            return Err("spec.holderIdentity: must be a string".into());
        }
    }
    if let Some(duration) = spec.get("leaseDurationSeconds") {
        if duration.as_i64().is_none_or(|d| d <= 0) {
            return Err(format!(
                "spec.leaseDurationSeconds: Invalid value: {duration}: must be greater than 0"
            ));
        }
    }
    if let Some(transitions) = spec.get("leaseTransitions") {
        if transitions.as_i64().is_none_or(|t| t < 0) {
            return Err(format!(
                "spec.leaseTransitions: Invalid value: {transitions}: must be greater than or equal to 0"
            ));
        }
    }
    for field in ["acquireTime", "renewTime"] {
        if let Some(time) = spec.get(field).filter(|t| !t.is_null()) {
            if !time.as_str().is_some_and(micro_time) {
                return Err(format!(
                    "spec.{field}: {time} is not a MicroTime (RFC 3339 with six fractional digits)"
                ));
            }
        }
    }
    Ok(())
}

fn label_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
}

fn label_key(key: &str) -> bool {
    match key.split_once('/') {
        Some((prefix, name)) => {
            !prefix.is_empty()
                && prefix.len() <= 253
                && prefix.split('.').all(|l| label_name(l) && !l.contains('_'))
                && label_name(name)
        }
        None => label_name(key),
    }
}

/// A patched pod, against the pod before: only labels and annotations may change, labels must
/// be valid.
pub fn check_pod_change(before: &Value, after: &Value) -> Result<(), String> {
    let without_meta = |pod: &Value| {
        let mut pod = pod.clone();
        if let Some(meta) = pod.get_mut("metadata").and_then(Value::as_object_mut) {
            meta.remove("labels");
            meta.remove("annotations");
            meta.remove("resourceVersion");
        }
        pod
    };
    if without_meta(before) != without_meta(after) {
        return Err(
            "Forbidden: the failover agent may change a pod's labels and annotations only".into(),
        );
    }
    let empty = Map::new();
    let labels = after["metadata"]["labels"].as_object().unwrap_or(&empty);
    for (key, value) in labels {
        let text = value.as_str().unwrap_or("");
        if !label_key(key) || !(text.is_empty() || label_name(text)) {
            return Err(format!(
                "metadata.labels: Invalid value: {key}={value}: a label key is [prefix/]name, a value 63 characters of letters, digits, '-', '_' or '.'"
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut pod = json!({"metadata": {"labels": {"a": "1", "b": "2"}, "name": "p"}});
        merge_patch(
            &mut pod,
            &json!({"metadata": {"labels": {"a": null, "c": "3"}}}),
        );
        assert_eq!(
            pod,
            json!({"metadata": {"labels": {"b": "2", "c": "3"}, "name": "p"}})
        );
    }

    #[test]
    fn lease_times_must_be_micro_times() {
        let lease = |t: &str| json!({"spec": {"renewTime": t, "leaseDurationSeconds": 15}});
        assert!(check_lease(&lease("2024-05-01T10:00:00.123456Z")).is_ok());
        assert!(check_lease(&lease("2024-05-01T10:00:00.123456+02:00")).is_ok());
        assert!(check_lease(&lease("2024-05-01T10:00:00Z")).is_err());
        assert!(check_lease(&lease("2024-05-01T10:00:00.123Z")).is_err());
        assert!(check_lease(&json!({"spec": {"leaseDurationSeconds": 0}})).is_err());
    }

    #[test]
    fn only_labels_and_annotations_of_a_pod_change() {
        let before = json!({"metadata": {"name": "p", "labels": {}}, "spec": {"image": "a"}});
        let relabelled = json!({"metadata": {"name": "p", "labels": {"immudb/role": "primary"}}, "spec": {"image": "a"}});
        assert!(check_pod_change(&before, &relabelled).is_ok());
        let reimaged = json!({"metadata": {"name": "p", "labels": {}}, "spec": {"image": "b"}});
        assert!(check_pod_change(&before, &reimaged).is_err());
        let bad = json!({"metadata": {"name": "p", "labels": {"immudb/role": "not ok!"}}, "spec": {"image": "a"}});
        assert!(check_pod_change(&before, &bad).is_err());
    }
}
