//! Wire conformance: every message, field, enum value and rpc of `proto/immudb.proto` carries the
//! name, type and number immudb 1.11.1 gives it (`fixtures/immudb-1.11.1/schema-numbers.tsv`, read
//! off immudb's own schema). immudb ignores a field number it does not know, and the test double is
//! built from the same proto, so a wrong number is invisible to every other test.

use std::collections::{BTreeMap, BTreeSet};

use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorProto};

const UPSTREAM: &str = include_str!("fixtures/immudb-1.11.1/schema-numbers.tsv");
const PACKAGE: &str = ".immudb.schema.";

/// immudb's API as the TSV lists it: what each (scope, name) is, as type and number.
#[derive(Default)]
struct Upstream {
    /// (message, field) → (type, number)
    fields: BTreeMap<(String, String), (String, String)>,
    /// (enum, value) → number
    enum_values: BTreeMap<(String, String), String>,
    /// (service, rpc) → (request, response), "stream " marking a stream
    rpcs: BTreeMap<(String, String), (String, String)>,
    /// Every message or enum name the API mentions, empty messages included.
    types: BTreeSet<String>,
}

fn upstream() -> Upstream {
    let mut api = Upstream::default();
    let mut rows = UPSTREAM.lines().filter(|l| !l.starts_with('#'));
    assert_eq!(
        rows.next(),
        Some("kind\tscope\tname\ttype\tnumber_or_returns")
    );
    for row in rows {
        let cols: Vec<&str> = row.split('\t').collect();
        let [kind, scope, name, ty, last] = cols[..] else {
            panic!("a row of five columns: {row:?}");
        };
        let key = (scope.to_string(), name.to_string());
        match kind {
            "field" => {
                api.types.insert(scope.to_string());
                api.fields.insert(key, (ty.to_string(), last.to_string()));
            }
            "enum" => {
                api.types.insert(scope.to_string());
                api.enum_values.insert(key, last.to_string());
            }
            "rpc" => {
                for t in [ty, last] {
                    api.types
                        .insert(t.trim_start_matches("stream ").to_string());
                }
                api.rpcs.insert(key, (ty.to_string(), last.to_string()));
            }
            _ => panic!("unknown kind in {row:?}"),
        }
    }
    api
}

fn ours() -> FileDescriptorProto {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../proto");
    let set = protox::compile(["immudb.proto"], [root]).expect("proto/immudb.proto compiles");
    set.file
        .into_iter()
        .find(|f| f.name() == "immudb.proto")
        .expect("the compiled set holds immudb.proto")
}

/// A type name as the TSV writes it: messages of the package by simple name, others in full.
fn type_name(full: &str) -> String {
    let full = full.trim_start_matches('.');
    full.strip_prefix(&PACKAGE[1..]).unwrap_or(full).to_string()
}

fn scalar(ty: Type) -> &'static str {
    match ty {
        Type::Double => "double",
        Type::Float => "float",
        Type::Int64 => "int64",
        Type::Uint64 => "uint64",
        Type::Int32 => "int32",
        Type::Fixed64 => "fixed64",
        Type::Fixed32 => "fixed32",
        Type::Bool => "bool",
        Type::String => "string",
        Type::Bytes => "bytes",
        Type::Uint32 => "uint32",
        Type::Sfixed32 => "sfixed32",
        Type::Sfixed64 => "sfixed64",
        Type::Sint32 => "sint32",
        Type::Sint64 => "sint64",
        Type::Group | Type::Message | Type::Enum => unreachable!("not a scalar"),
    }
}

fn field_type(message: &DescriptorProto, field: &prost_types::FieldDescriptorProto) -> String {
    let base = match field.r#type() {
        Type::Message | Type::Enum => type_name(field.type_name()),
        other => scalar(other).to_string(),
    };
    if field.label() != Label::Repeated {
        return base;
    }
    // A map is a repeated nested *Entry message with key = 1 and value = 2.
    let entry = message
        .nested_type
        .iter()
        .find(|n| n.options.as_ref().is_some_and(|o| o.map_entry()) && base.ends_with(n.name()));
    match entry {
        Some(entry) => format!(
            "map<{}, {}>",
            field_type(entry, &entry.field[0]),
            field_type(entry, &entry.field[1])
        ),
        None => format!("repeated {base}"),
    }
}

/// Every way our proto departs from immudb's: an invented message, field, enum value or rpc, or
/// one with another type or number.
fn departures(file: &FileDescriptorProto, api: &Upstream) -> Vec<String> {
    let mut found = Vec::new();
    for message in &file.message_type {
        let name = message.name();
        if !api.types.contains(name) {
            found.push(format!("message {name}: immudb has no such message"));
        }
        for field in &message.field {
            let ours = (field_type(message, field), field.number().to_string());
            match api
                .fields
                .get(&(name.to_string(), field.name().to_string()))
            {
                None => found.push(format!("{name}.{}: immudb has no such field", field.name())),
                Some(theirs) if *theirs != ours => found.push(format!(
                    "{name}.{}: ours is {} = {}, immudb's is {} = {}",
                    field.name(),
                    ours.0,
                    ours.1,
                    theirs.0,
                    theirs.1
                )),
                Some(_) => {}
            }
        }
    }
    for enumeration in &file.enum_type {
        for value in &enumeration.value {
            let key = (enumeration.name().to_string(), value.name().to_string());
            let ours = value.number().to_string();
            match api.enum_values.get(&key) {
                Some(theirs) if *theirs == ours => {}
                theirs => found.push(format!(
                    "{}.{} = {ours}: immudb's is {theirs:?}",
                    key.0, key.1
                )),
            }
        }
    }
    for service in &file.service {
        for method in &service.method {
            let stream = |streaming: bool, ty: &str| {
                let ty = type_name(ty);
                if streaming {
                    format!("stream {ty}")
                } else {
                    ty
                }
            };
            let ours = (
                stream(method.client_streaming(), method.input_type()),
                stream(method.server_streaming(), method.output_type()),
            );
            let key = (service.name().to_string(), method.name().to_string());
            match api.rpcs.get(&key) {
                Some(theirs) if *theirs == ours => {}
                theirs => found.push(format!(
                    "rpc {}.{}({}) returns ({}): immudb's is {theirs:?}",
                    key.0, key.1, ours.0, ours.1
                )),
            }
        }
    }
    found
}

#[test]
fn the_upstream_list_is_whole() {
    let api = upstream();
    // 413 fields, 9 enum values and 74 rpcs, as read off immudb 1.11.1.
    assert_eq!(
        (api.fields.len(), api.enum_values.len(), api.rpcs.len()),
        (413, 9, 74)
    );
}

#[test]
fn every_message_field_enum_and_rpc_matches_immudb() {
    let file = ours();
    assert!(file.message_type.len() > 30 && !file.service.is_empty());
    assert_eq!(departures(&file, &upstream()), Vec::<String>::new());
}

#[test]
fn a_changed_number_an_invented_field_and_a_wrong_rpc_are_caught() {
    let api = upstream();
    let mut file = ours();
    let message = |file: &mut FileDescriptorProto, name: &str| -> usize {
        file.message_type
            .iter()
            .position(|m| m.name() == name)
            .unwrap_or_else(|| panic!("our proto declares {name}"))
    };
    // The bug this test exists for: TruncationNullableSettings numbered 28 and 29.
    let truncation = message(&mut file, "TruncationNullableSettings");
    file.message_type[truncation].field[0].number = Some(28);
    let settings = message(&mut file, "DatabaseNullableSettings");
    let mut invented = file.message_type[settings].field[0].clone();
    invented.name = Some("inventedSetting".into());
    invented.number = Some(99);
    file.message_type[settings].field.push(invented);
    file.service[0].method[0].server_streaming = Some(true);

    let found = departures(&file, &api);
    assert_eq!(found.len(), 3, "{found:#?}");
    assert!(found[0].contains("TruncationNullableSettings.retentionPeriod: ours is NullableMilliseconds = 28, immudb's is NullableMilliseconds = 1"), "{found:#?}");
    assert!(
        found[1].contains("DatabaseNullableSettings.inventedSetting: immudb has no such field"),
        "{found:#?}"
    );
    assert!(found[2].starts_with("rpc ImmuService."), "{found:#?}");
}
