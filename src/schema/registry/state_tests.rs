use super::*;

const A1: &str = r#"{"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}]}"#;
const A2: &str = r#"{"type": "record", "name": "R", "fields": [{"name": "a", "type": "int"}, {"name": "b", "type": "int", "default": 0}]}"#;
const BAD: &str = r#"{"type": "record", "name": "R", "fields": [{"name": "a", "type": "string"}]}"#;

fn avro(s: &str) -> ParsedSchema {
    ParsedSchema::parse(SchemaType::Avro, s).unwrap()
}

/// Registers like the registry does: plan, then apply the event.
fn register(st: &mut RegistryState, subject: &str, text: &str) -> Result<(u32, u32), RegistryError> {
    match st.plan_register(subject, text, &avro(text))? {
        RegisterPlan::Existing { id, version } => Ok((id, version)),
        RegisterPlan::New(e) => {
            let Event::Register { id, version, .. } = e.clone() else { unreachable!() };
            st.apply(e, None);
            Ok((id, version))
        }
    }
}

#[test]
fn ids_are_global_and_versions_per_subject() {
    let mut st = RegistryState::default();
    assert_eq!(register(&mut st, "a-value", A1).unwrap(), (1, 1));
    assert_eq!(register(&mut st, "a-value", A2).unwrap(), (2, 2));
    // The same text under another subject keeps its id; a new version there.
    assert_eq!(register(&mut st, "b-value", A1).unwrap(), (1, 1));
    // Re-registering returns what exists, writes nothing.
    let before = st.applied();
    // Layout does not matter.
    let relaid = A1.replace(' ', "");
    assert_eq!(register(&mut st, "a-value", &relaid).unwrap(), (1, 1));
    assert_eq!(st.applied(), before);
    assert_eq!(st.subjects(false), vec!["a-value", "b-value"]);
    assert_eq!(st.versions("a-value", false).unwrap(), vec![1, 2]);
    assert_eq!(st.id_versions(1, false).unwrap(), vec![("a-value".into(), 1), ("b-value".into(), 1)]);
    assert_eq!(st.version("a-value", VersionSpec::Latest, false).unwrap().id, 2);
    assert_eq!(st.lookup("b-value", &avro(A1), false).unwrap().version, 1);
    assert_eq!(st.lookup("b-value", &avro(A2), false).unwrap_err().error_code(), 40403);
    assert_eq!(st.lookup("c-value", &avro(A2), false).unwrap_err().error_code(), 40401);
    assert_eq!(st.schema(9).unwrap_err().error_code(), 40403);
    assert_eq!(st.version("a-value", VersionSpec::Number(3), false).unwrap_err().error_code(), 40402);
}

#[test]
fn incompatible_schemas_are_refused_under_the_subject_level() {
    let mut st = RegistryState::default();
    register(&mut st, "s", A1).unwrap();
    let e = register(&mut st, "s", BAD).unwrap_err();
    assert_eq!(e.error_code(), 409);
    assert!(e.to_string().contains("incompatible"), "{e}");
    st.apply(Event::SetConfig { subject: Some("s".into()), compatibility: Some(Compatibility::None) }, None);
    assert_eq!(register(&mut st, "s", BAD).unwrap(), (2, 2));
    assert_eq!(st.subject_compatibility("s", false).unwrap(), Compatibility::None);
    assert_eq!(st.subject_compatibility("t", false).unwrap_err().error_code(), 40408);
    assert_eq!(st.subject_compatibility("t", true).unwrap(), Compatibility::Backward);
    st.apply(Event::SetConfig { subject: None, compatibility: Some(Compatibility::Full) }, None);
    assert_eq!(st.effective_compatibility("t"), Compatibility::Full);
    assert_eq!(st.effective_compatibility("s"), Compatibility::None);
}

#[test]
fn soft_then_hard_delete_follow_confluent() {
    let mut st = RegistryState::default();
    register(&mut st, "s", A1).unwrap();
    register(&mut st, "s", A2).unwrap();
    // A hard delete needs a soft delete first.
    assert_eq!(st.plan_delete_version("s", VersionSpec::Number(1), true).unwrap_err().error_code(), 40407);
    let (e, v) = st.plan_delete_version("s", VersionSpec::Number(1), false).unwrap();
    assert_eq!(v, 1);
    st.apply(e, None);
    assert_eq!(st.plan_delete_version("s", VersionSpec::Number(1), false).unwrap_err().error_code(), 40406);
    assert_eq!(st.versions("s", false).unwrap(), vec![2]);
    assert_eq!(st.versions("s", true).unwrap(), vec![1, 2]);
    assert_eq!(st.version("s", VersionSpec::Number(1), false).unwrap_err().error_code(), 40402);
    assert!(st.version("s", VersionSpec::Number(1), true).unwrap().deleted);
    // A soft-deleted schema is still readable by id.
    assert_eq!(st.schema(1).unwrap().id, 1);
    let (e, _) = st.plan_delete_version("s", VersionSpec::Number(1), true).unwrap();
    st.apply(e, None);
    assert_eq!(st.schema(1).unwrap_err().error_code(), 40403);
    assert_eq!(st.versions("s", true).unwrap(), vec![2]);

    assert_eq!(st.plan_delete_subject("s", true).unwrap_err().error_code(), 40405);
    let (e, versions) = st.plan_delete_subject("s", false).unwrap();
    assert_eq!(versions, vec![2]);
    st.apply(e, None);
    assert_eq!(st.plan_delete_subject("s", false).unwrap_err().error_code(), 40404);
    assert!(st.subjects(false).is_empty());
    assert_eq!(st.subjects(true), vec!["s"]);
    assert_eq!(st.versions("s", false).unwrap_err().error_code(), 40401);
    // Registering again after a soft delete adds a version after the deleted ones.
    assert_eq!(register(&mut st, "s", A2).unwrap(), (2, 3));
    let (e, _) = st.plan_delete_subject("s", false).unwrap();
    st.apply(e, None);
    let (e, versions) = st.plan_delete_subject("s", true).unwrap();
    assert_eq!(versions, vec![2, 3]);
    st.apply(e, None);
    assert!(st.subjects(true).is_empty());
    assert_eq!(st.plan_delete_subject("s", false).unwrap_err().error_code(), 40401);
    // Ids are never reused.
    assert_eq!(register(&mut st, "s", A1).unwrap(), (3, 1));
}

#[test]
fn replaying_the_events_rebuilds_the_state() {
    let mut st = RegistryState::default();
    let mut log = Vec::new();
    for (subject, text) in [("x", A1), ("x", A2), ("y", A2)] {
        if let RegisterPlan::New(e) = st.plan_register(subject, text, &avro(text)).unwrap() {
            log.push(e.clone());
            st.apply(e, None);
        }
    }
    let (e, _) = st.plan_delete_version("x", VersionSpec::Latest, false).unwrap();
    log.push(e.clone());
    st.apply(e, None);
    let mut replayed = RegistryState::default();
    for e in log {
        let json = serde_json::to_string(&e).unwrap();
        replayed.apply(serde_json::from_str(&json).unwrap(), None);
    }
    assert_eq!(replayed.applied(), st.applied());
    assert_eq!(replayed.subjects(true), st.subjects(true));
    assert_eq!(replayed.versions("x", true).unwrap(), st.versions("x", true).unwrap());
    assert_eq!(
        replayed.version("x", VersionSpec::Latest, false).unwrap(),
        st.version("x", VersionSpec::Latest, false).unwrap()
    );
}

#[test]
fn version_and_subject_arguments_are_checked() {
    assert_eq!(VersionSpec::parse("latest").unwrap(), VersionSpec::Latest);
    assert_eq!(VersionSpec::parse("-1").unwrap(), VersionSpec::Latest);
    assert_eq!(VersionSpec::parse("3").unwrap(), VersionSpec::Number(3));
    for bad in ["0", "abc", "2147483648", ""] {
        assert_eq!(VersionSpec::parse(bad).unwrap_err().error_code(), 42202, "{bad}");
    }
    assert!(validate_subject("orders-value").is_ok());
    assert!(validate_subject("").is_err());
    assert!(validate_subject("a\nb").is_err());
}
