//! The CIM-XML codec's round trips and refusals, and the provider over the mock service.

use super::provider::{naa_of_serial, Provider, NS_STORAGE};
use super::xml::*;
use crate::testing::mock::Mock;
use proptest::prelude::*;
use std::sync::Arc;

fn vol(name: &str) -> ObjectPath {
    ObjectPath::new("LIO_StorageVolume")
        .with_string_key("SystemCreationClassName", "LIO_ComputerSystem")
        .with_string_key("SystemName", "host1")
        .with_string_key("CreationClassName", "LIO_StorageVolume")
        .with_string_key("DeviceID", &format!("block/{name}"))
}

fn service_path() -> ObjectPath {
    ObjectPath::new("LIO_StorageConfigurationService")
        .with_string_key("SystemCreationClassName", "LIO_ComputerSystem")
        .with_string_key("SystemName", "host1")
        .with_string_key("CreationClassName", "LIO_StorageConfigurationService")
        .with_string_key("Name", "lio-replica")
        .in_namespace(None, NS_STORAGE)
}

fn param(name: &str, ty: Option<CimType>, value: ParamValue) -> Param {
    Param {
        name: name.into(),
        ty,
        value,
    }
}

fn intrinsic(name: &str, ns: &str, params: Vec<Param>) -> Request {
    Request {
        message_id: "42".into(),
        call: Call::Intrinsic {
            name: name.into(),
            namespace: ns.into(),
        },
        params,
    }
}

fn attach(source: ObjectPath, target: ObjectPath, copy_type: &str) -> Request {
    Request {
        message_id: "7".into(),
        call: Call::Extrinsic {
            name: "AttachReplica".into(),
            target: service_path(),
        },
        params: vec![
            param(
                "SourceElement",
                Some(CimType::Reference),
                ParamValue::Value(Value::Reference(source)),
            ),
            param(
                "TargetElement",
                Some(CimType::Reference),
                ParamValue::Value(Value::Reference(target)),
            ),
            param(
                "CopyType",
                Some(CimType::Uint16),
                ParamValue::Value(Value::Scalar(copy_type.into())),
            ),
        ],
    }
}

#[test]
fn requests_round_trip_in_every_path_form() {
    let full = vol("a").in_namespace(Some("host1"), NS_STORAGE);
    let local = vol("b").in_namespace(None, NS_STORAGE);
    let nested = ObjectPath::new("LIO_StorageSynchronized")
        .with_key("SystemElement", KeyValue::Reference(Box::new(full.clone())))
        .with_key("SyncedElement", KeyValue::Reference(Box::new(vol("c"))))
        .with_key("Flag", KeyValue::Boolean(true))
        .with_key("Count", KeyValue::Numeric("12".into()));
    let reqs = [
        attach(full, local, "3"),
        intrinsic(
            "EnumerateInstances",
            "root/cimv2/storage/iscsitarget",
            vec![
                param(
                    "ClassName",
                    None,
                    ParamValue::ClassName("CIM_StorageVolume".into()),
                ),
                param(
                    "DeepInheritance",
                    None,
                    ParamValue::Value(Value::Scalar("TRUE".into())),
                ),
                param(
                    "PropertyList",
                    None,
                    ParamValue::Value(Value::Array(vec!["DeviceID".into(), "Name".into()])),
                ),
                param("Role", None, ParamValue::Null),
            ],
        ),
        intrinsic(
            "GetInstance",
            "interop",
            vec![param(
                "InstanceName",
                None,
                ParamValue::InstanceName(nested),
            )],
        ),
    ];
    for r in reqs {
        let text = write_request(&r);
        assert_eq!(parse_request(&text).unwrap(), r, "{text}");
    }
}

#[test]
fn responses_round_trip() {
    let inst = Instance {
        class: "LIO_StorageVolume".into(),
        properties: vec![
            Property::string("DeviceID", "block/a <&> \"q\" 'a'"),
            Property::opt_string("Device", None::<String>),
            Property::number("BlockSize", CimType::Uint64, 512),
            Property::boolean("ReadOnly", false),
            Property::array("OperationalStatus", CimType::Uint16, vec!["2".into()]),
            Property::reference(
                "Peer",
                "CIM_StorageVolume",
                vol("b").in_namespace(Some("h"), "interop"),
            ),
            Property::datetime("When", Some(datetime(0))),
        ],
    };
    let path = vol("a").in_namespace(Some("host1"), NS_STORAGE);
    let class = super::classes::shaped(
        super::classes::find("LIO_StorageConfigurationService").unwrap(),
        false,
        true,
        true,
        None,
    );
    let results = [
        ("GetInstance", IReturn::Instance(inst.clone())),
        ("GetClass", IReturn::Class(class.clone())),
        ("EnumerateClasses", IReturn::Classes(vec![class])),
        (
            "EnumerateClassNames",
            IReturn::ClassNames(vec!["CIM_A".into(), "CIM_B".into()]),
        ),
        (
            "EnumerateInstanceNames",
            IReturn::InstanceNames(vec![vol("a"), vol("b")]),
        ),
        (
            "EnumerateInstances",
            IReturn::NamedInstances(vec![(vol("a"), inst.clone())]),
        ),
        (
            "Associators",
            IReturn::ObjectsWithPath(vec![(path.clone(), inst.clone())]),
        ),
        ("ReferenceNames", IReturn::ObjectPaths(vec![path.clone()])),
        ("EnumerateInstances", IReturn::NamedInstances(vec![])),
    ];
    for (name, result) in results {
        let r = Response::Intrinsic {
            name: name.into(),
            result: Ok(result),
        };
        let text = write_response("9", &r);
        assert_eq!(parse_response(&text).unwrap(), ("9".into(), r), "{text}");
    }
    let errors = [
        Response::Intrinsic {
            name: "GetInstance".into(),
            result: Err(CimError::new(status::NOT_FOUND, "no instance <x>")),
        },
        Response::Extrinsic {
            name: "GetError".into(),
            result: Ok(MethodReturn {
                return_type: CimType::Uint32,
                return_value: "0".into(),
                out: vec![
                    param(
                        "Error",
                        Some(CimType::String),
                        ParamValue::EmbeddedInstance(Some(inst.clone())),
                    ),
                    param(
                        "Errors",
                        Some(CimType::String),
                        ParamValue::EmbeddedInstances(vec![inst.clone(), inst]),
                    ),
                    param(
                        "None",
                        Some(CimType::String),
                        ParamValue::EmbeddedInstance(None),
                    ),
                    param(
                        "Job",
                        Some(CimType::Reference),
                        ParamValue::Value(Value::Reference(path)),
                    ),
                ],
            }),
        },
    ];
    for r in errors {
        let text = write_response("10", &r);
        assert_eq!(parse_response(&text).unwrap(), ("10".into(), r), "{text}");
    }
}

/// A request as pywbem 1.9 writes it (whitespace, attribute order and a reference given as an
/// INSTANCEPATH with its host).
#[test]
fn a_pywbem_request_is_read() {
    let text = r#"<?xml version="1.0" encoding="utf-8" ?>
<CIM CIMVERSION="2.0" DTDVERSION="2.0"><MESSAGE ID="1001" PROTOCOLVERSION="1.0"><SIMPLEREQ>
<METHODCALL NAME="AttachReplica"><LOCALINSTANCEPATH><LOCALNAMESPACEPATH><NAMESPACE NAME="root"/>
<NAMESPACE NAME="cimv2"/><NAMESPACE NAME="storage"/><NAMESPACE NAME="iscsitarget"/></LOCALNAMESPACEPATH>
<INSTANCENAME CLASSNAME="LIO_StorageConfigurationService"><KEYBINDING NAME="Name"><KEYVALUE VALUETYPE="string" TYPE="string">lio-replica</KEYVALUE></KEYBINDING></INSTANCENAME></LOCALINSTANCEPATH>
<PARAMVALUE NAME="SourceElement" PARAMTYPE="reference"><VALUE.REFERENCE><INSTANCEPATH><NAMESPACEPATH><HOST>host1</HOST>
<LOCALNAMESPACEPATH><NAMESPACE NAME="root"/><NAMESPACE NAME="cimv2"/><NAMESPACE NAME="storage"/><NAMESPACE NAME="iscsitarget"/></LOCALNAMESPACEPATH></NAMESPACEPATH>
<INSTANCENAME CLASSNAME="LIO_StorageVolume"><KEYBINDING NAME="DeviceID"><KEYVALUE VALUETYPE="string">block/a&amp;b&#x41;</KEYVALUE></KEYBINDING></INSTANCENAME></INSTANCEPATH></VALUE.REFERENCE></PARAMVALUE>
<PARAMVALUE NAME="CopyType" PARAMTYPE="uint16"><VALUE>3</VALUE></PARAMVALUE></METHODCALL></SIMPLEREQ></MESSAGE></CIM>"#;
    let r = parse_request(text).unwrap();
    let Call::Extrinsic { name, target } = &r.call else {
        panic!("{r:?}")
    };
    assert_eq!(name, "AttachReplica");
    assert_eq!(target.namespace.as_deref(), Some(NS_STORAGE));
    let Some(ParamValue::Value(Value::Reference(src))) = r.param("sourceelement").map(|p| &p.value)
    else {
        panic!("{r:?}")
    };
    assert_eq!(src.host.as_deref(), Some("host1"));
    assert_eq!(
        src.key("deviceid").and_then(KeyValue::as_str),
        Some("block/a&bA")
    );
    assert_eq!(r.param("CopyType").unwrap().ty, Some(CimType::Uint16));
}

#[test]
fn hostile_documents_are_refused_with_the_right_cim_error() {
    let well = |e: XmlError| matches!(e, XmlError::NotWellFormed(_));
    let cases: Vec<(String, bool)> = vec![
        ("<CIM><MESSAGE ID='1'".into(), true),
        ("<?xml version='1.0'?><!DOCTYPE x [<!ENTITY a 'b'>]><CIM>&a;</CIM>".into(), true),
        ("<CIM>&undefined;</CIM>".into(), true),
        (format!("{}{}", "<a>".repeat(MAX_DEPTH + 1), "</a>".repeat(MAX_DEPTH + 1)), true),
        ("<CIM></CIM><CIM></CIM>".into(), true),
        ("<CIM></WRONG>".into(), true),
        ("".into(), true),
        ("<CIM><MESSAGE ID='1'><SIMPLEREQ/></MESSAGE></CIM>".into(), false),
        ("<NOTCIM/>".into(), false),
        (
            "<CIM><MESSAGE ID='1'><SIMPLEREQ><IMETHODCALL NAME='GetClass'><LOCALNAMESPACEPATH/></IMETHODCALL></SIMPLEREQ></MESSAGE></CIM>".into(),
            false,
        ),
    ];
    for (doc, not_well_formed) in cases {
        let e = parse_request(&doc).unwrap_err();
        assert_eq!(well(e.clone()), not_well_formed, "{doc:.80}: {e}");
        let want = if not_well_formed {
            "request-not-well-formed"
        } else {
            "request-not-valid"
        };
        assert_eq!(e.header_value(), want);
    }
    let multi = parse_request("<CIM><MESSAGE ID='1'><MULTIREQ/></MESSAGE></CIM>").unwrap_err();
    assert_eq!(multi.header_value(), "multiple-requests-unsupported");
    // too many elements, each shallow
    let wide = format!("<CIM>{}</CIM>", "<x/>".repeat(MAX_ELEMENTS + 1));
    assert!(matches!(
        parse_request(&wide),
        Err(XmlError::NotWellFormed(_))
    ));
}

#[test]
fn datetimes_are_dsp0004() {
    assert_eq!(datetime(0), "19700101000000.000000+000");
    assert_eq!(datetime(1_700_000_000), "20231114221320.000000+000");
    assert_eq!(interval(90061.5), "00000001010101.500000:000");
}

#[test]
fn the_naa_identifier_is_lios() {
    // the kernel: 0x6, company 0x001405, then the serial's hex digits (dashes skipped)
    assert_eq!(
        naa_of_serial("5e2e0000-0000-4000-8000-00000000db01"),
        "60014055E2E000000004000800000000"
    );
    assert_eq!(naa_of_serial("ab").len(), 32);
}

fn provider() -> (Arc<Mock>, Provider) {
    let mock = Arc::new(Mock::default());
    (mock.clone(), Provider::new(mock, "host1"))
}

fn ok(r: Response) -> IReturn {
    match r {
        Response::Intrinsic { result: Ok(r), .. } => r,
        other => panic!("{other:?}"),
    }
}

fn cim_err(r: Response) -> u16 {
    match r {
        Response::Intrinsic { result: Err(e), .. } | Response::Extrinsic { result: Err(e), .. } => {
            e.code
        }
        other => panic!("{other:?}"),
    }
}

fn class_param(name: &str) -> Param {
    param("ClassName", None, ParamValue::ClassName(name.into()))
}

#[test]
fn enumerations_follow_the_class_hierarchy() {
    let (_, p) = provider();
    let names = |class: &str| match ok(p.handle(&intrinsic(
        "EnumerateInstanceNames",
        NS_STORAGE,
        vec![class_param(class)],
    ))) {
        IReturn::InstanceNames(v) => v,
        other => panic!("{other:?}"),
    };
    assert_eq!(names("CIM_StorageVolume").len(), 1);
    assert_eq!(
        names("CIM_ManagedElement").len(),
        names("CIM_ManagedElement").len()
    );
    assert!(
        names("CIM_ManagedElement").len() > 6,
        "every instance is a ManagedElement"
    );
    assert_eq!(names("CIM_ConcreteJob").len(), 3);
    assert_eq!(
        names("CIM_StorageSynchronized")[0].class,
        "LIO_StorageSynchronized"
    );
    // profiles live in interop only
    assert!(names("CIM_RegisteredProfile").is_empty());
    let r = p.handle(&intrinsic(
        "EnumerateInstanceNames",
        "root/interop",
        vec![class_param("CIM_RegisteredProfile")],
    ));
    assert!(matches!(ok(r), IReturn::InstanceNames(v) if v.len() == 3));

    // DeepInheritance false: only the properties the named class has
    let r = ok(p.handle(&intrinsic(
        "EnumerateInstances",
        NS_STORAGE,
        vec![
            class_param("CIM_StorageVolume"),
            param(
                "DeepInheritance",
                None,
                ParamValue::Value(Value::Scalar("FALSE".into())),
            ),
        ],
    )));
    let IReturn::NamedInstances(v) = r else {
        panic!()
    };
    assert!(v[0].1.property("DeviceID").is_some() && v[0].1.property("Plugin").is_none());

    for (req, code) in [
        (
            intrinsic(
                "EnumerateInstances",
                NS_STORAGE,
                vec![class_param("CIM_Nope")],
            ),
            status::INVALID_CLASS,
        ),
        (
            intrinsic(
                "EnumerateInstances",
                "root/nope",
                vec![class_param("CIM_StorageVolume")],
            ),
            status::INVALID_NAMESPACE,
        ),
        (
            intrinsic("EnumerateInstances", NS_STORAGE, vec![]),
            status::INVALID_PARAMETER,
        ),
        (
            intrinsic(
                "EnumerateInstances",
                NS_STORAGE,
                vec![
                    class_param("CIM_StorageVolume"),
                    param("Colour", None, ParamValue::Null),
                ],
            ),
            status::INVALID_PARAMETER,
        ),
        (
            intrinsic("ExecQuery", NS_STORAGE, vec![]),
            status::NOT_SUPPORTED,
        ),
        (
            intrinsic("CreateInstance", NS_STORAGE, vec![]),
            status::NOT_SUPPORTED,
        ),
    ] {
        assert_eq!(cim_err(p.handle(&req)), code, "{req:?}");
    }
}

#[test]
fn get_class_honours_local_only() {
    let (_, p) = provider();
    let get = |local: &str| match ok(p.handle(&intrinsic(
        "GetClass",
        NS_STORAGE,
        vec![
            class_param("LIO_StorageVolume"),
            param(
                "LocalOnly",
                None,
                ParamValue::Value(Value::Scalar(local.into())),
            ),
        ],
    ))) {
        IReturn::Class(c) => c,
        other => panic!("{other:?}"),
    };
    let all = get("FALSE");
    let local = get("TRUE");
    let key = |c: &ClassDecl, n: &str| {
        c.properties
            .iter()
            .find(|p| p.name == n)
            .is_some_and(|p| p.qualifiers.iter().any(|q| q.name == "Key"))
    };
    assert!(key(&all, "DeviceID") && key(&all, "SystemName"));
    assert!(local.properties.iter().all(|p| p.name != "DeviceID"));
    assert!(local.properties.iter().any(|p| p.name == "Plugin"));
    assert_eq!(all.superclass.as_deref(), Some("CIM_StorageVolume"));
}

#[test]
fn attach_replica_maps_references_onto_the_service() {
    let (mock, p) = provider();
    let call = |r: &Request| match p.handle(r) {
        Response::Extrinsic { result: Ok(m), .. } => m,
        other => panic!("{other:?}"),
    };
    let m = call(&attach(vol("src"), vol("dst"), "3"));
    assert_eq!(m.return_value, "4096");
    let job = m.out.iter().find(|o| o.name == "Job").unwrap();
    let ParamValue::Value(Value::Reference(j)) = &job.value else {
        panic!()
    };
    assert_eq!(j.class, "LIO_ConcreteJob");
    assert_eq!(
        j.key("InstanceID").and_then(KeyValue::as_str),
        Some("LIO:job-1")
    );
    assert_eq!(
        mock.calls().last().unwrap(),
        "AttachReplica(block/src,block/dst,3)"
    );

    // the service's refusal passes through, reason included
    let m = call(&attach(vol("busy"), vol("dst"), "3"));
    assert_eq!(m.return_value, "6");
    assert!(m.out.iter().any(|o| o.name == "Description"
        && o.value
            == ParamValue::Value(Value::Scalar(
                "in use: block/busy is already in relationship rel-9".into()
            ))));

    let mut not_a_volume = attach(vol("src"), vol("dst"), "3");
    if let ParamValue::Value(Value::Reference(p)) = &mut not_a_volume.params[1].value {
        p.class = "LIO_ConcreteJob".into();
    }
    let mut no_copy_type = attach(vol("src"), vol("dst"), "3");
    no_copy_type.params.pop();
    let mut bad_number = attach(vol("src"), vol("dst"), "x");
    bad_number.params[2].value = ParamValue::Value(Value::Scalar("70000".into()));
    let mut output_given = attach(vol("src"), vol("dst"), "3");
    output_given
        .params
        .push(param("Job", None, ParamValue::Null));
    let mut wrong_service = attach(vol("src"), vol("dst"), "3");
    if let Call::Extrinsic { target, .. } = &mut wrong_service.call {
        target.keys[3].1 = KeyValue::String("other".into());
    }
    let mut no_method = attach(vol("src"), vol("dst"), "3");
    if let Call::Extrinsic { name, .. } = &mut no_method.call {
        *name = "DeleteEverything".into();
    }
    let before = mock.calls().len();
    for (r, code) in [
        (not_a_volume, status::INVALID_PARAMETER),
        (no_copy_type, status::INVALID_PARAMETER),
        (bad_number, status::INVALID_PARAMETER),
        (output_given, status::INVALID_PARAMETER),
        (wrong_service, status::NOT_FOUND),
        (no_method, status::METHOD_NOT_FOUND),
    ] {
        assert_eq!(cim_err(p.handle(&r)), code, "{r:?}");
    }
    assert!(
        mock.calls()[before..]
            .iter()
            .all(|c| !c.starts_with("AttachReplica")),
        "nothing refused reaches the engine: {:?}",
        &mock.calls()[before..]
    );
}

#[test]
fn modify_synchronization_finds_the_relationship_by_its_elements() {
    let (mock, p) = provider();
    let sync = |src: &str, dst: &str| {
        ObjectPath::new("LIO_StorageSynchronized")
            .with_key("SystemElement", KeyValue::Reference(Box::new(vol(src))))
            .with_key("SyncedElement", KeyValue::Reference(Box::new(vol(dst))))
    };
    let req = |s: ObjectPath, op: &str| Request {
        message_id: "1".into(),
        call: Call::Extrinsic {
            name: "ModifySynchronization".into(),
            target: service_path(),
        },
        params: vec![
            param(
                "Operation",
                None,
                ParamValue::Value(Value::Scalar(op.into())),
            ),
            param(
                "Synchronization",
                None,
                ParamValue::Value(Value::Reference(s)),
            ),
            param(
                "Force",
                None,
                ParamValue::Value(Value::Scalar("true".into())),
            ),
        ],
    };
    let rv = |r: Response| match r {
        Response::Extrinsic { result: Ok(m), .. } => m.return_value,
        other => panic!("{other:?}"),
    };
    assert_eq!(rv(p.handle(&req(sync("src", "dst"), "3"))), "0");
    assert_eq!(
        mock.calls().last().unwrap(),
        "ModifySynchronization(rel-1,3,true)"
    );
    assert_eq!(
        rv(p.handle(&req(sync("dst", "src"), "3"))),
        "5",
        "direction matters"
    );
}

#[test]
fn associations_are_walked_both_ways() {
    let (_, p) = provider();
    let walk = |op: &str, object: ObjectPath, extra: Vec<Param>| {
        let mut params = vec![param("ObjectName", None, ParamValue::InstanceName(object))];
        params.extend(extra);
        ok(p.handle(&intrinsic(op, NS_STORAGE, params)))
    };
    let job = ObjectPath::new("LIO_ConcreteJob").with_string_key("InstanceID", "LIO:job-1");
    let IReturn::ObjectPaths(v) = walk(
        "AssociatorNames",
        job.clone(),
        vec![param(
            "AssocClass",
            None,
            ParamValue::ClassName("CIM_AffectedJobElement".into()),
        )],
    ) else {
        panic!()
    };
    let ids: Vec<_> = v
        .iter()
        .filter_map(|p| p.key("DeviceID")?.as_str())
        .collect();
    assert_eq!(ids, ["block/src", "block/dst"]);
    // from a volume back to its job, through the same association, with ResultRole
    let IReturn::ObjectsWithPath(v) = walk(
        "Associators",
        vol("src"),
        vec![
            param(
                "AssocClass",
                None,
                ParamValue::ClassName("CIM_AffectedJobElement".into()),
            ),
            param(
                "ResultRole",
                None,
                ParamValue::Value(Value::Scalar("AffectingElement".into())),
            ),
        ],
    ) else {
        panic!()
    };
    assert_eq!(v.len(), 3, "the mock's three jobs all name block/src");
    assert!(v.iter().all(|(_, i)| i.class == "LIO_ConcreteJob"));
    let IReturn::ObjectsWithPath(v) = walk(
        "References",
        vol("src"),
        vec![param(
            "ResultClass",
            None,
            ParamValue::ClassName("CIM_StorageSynchronized".into()),
        )],
    ) else {
        panic!()
    };
    assert_eq!(v.len(), 1);
    assert_eq!(
        v[0].1.property("SyncState").unwrap().value,
        Some(Value::Scalar("6".into()))
    );
    let IReturn::ObjectPaths(v) = walk(
        "ReferenceNames",
        vol("src"),
        vec![param(
            "Role",
            None,
            ParamValue::Value(Value::Scalar("SyncedElement".into())),
        )],
    ) else {
        panic!()
    };
    assert!(
        v.is_empty(),
        "src is the SystemElement, not the SyncedElement"
    );
}

fn arb_text() -> impl Strategy<Value = String> {
    // what XML 1.0 can carry (no NUL or other C0 controls but tab and LF), markup included
    "[\t\n<>&\"' -~é-ÿ中-丰]{0,24}"
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_bytes_are_refused_or_read_never_a_panic(s in "\\PC{0,400}") {
        let _ = parse_request(&s);
        let _ = parse_response(&s);
    }

    #[test]
    fn a_mangled_request_is_refused_or_read_never_a_panic(cut in 0usize..2000, insert in "[<>&;/=\"'a-z!\\[\\]-]{0,8}") {
        let text = write_request(&attach(vol("a&b"), vol("c").in_namespace(Some("h"), "root/x"), "3"));
        let cut = cut.min(text.len());
        let cut = (0..=cut).rev().find(|i| text.is_char_boundary(*i)).unwrap_or(0);
        let mangled = format!("{}{}{}", &text[..cut], insert, &text[cut..]);
        let _ = parse_request(&mangled);
    }

    #[test]
    fn any_key_text_round_trips(k in arb_text(), v in arb_text(), ns in "[a-z]{1,8}(/[a-z]{1,8}){0,3}") {
        let p = ObjectPath::new("LIO_StorageVolume")
            .with_string_key("DeviceID", &v)
            .with_key("Other", KeyValue::String(k))
            .in_namespace(Some("host"), &ns);
        let r = intrinsic("GetInstance", &ns, vec![param("InstanceName", None, ParamValue::Value(Value::Reference(p)))]);
        prop_assert_eq!(parse_request(&write_request(&r)).unwrap(), r);
    }
}

#[test]
fn job_methods_reach_the_service() {
    let (mock, p) = provider();
    let on_job = |id: &str, method: &str, params: Vec<Param>| {
        p.handle(&Request {
            message_id: "1".into(),
            call: Call::Extrinsic {
                name: method.into(),
                target: ObjectPath::new("LIO_ConcreteJob")
                    .with_string_key("InstanceID", &format!("LIO:{id}"))
                    .in_namespace(None, NS_STORAGE),
            },
            params,
        })
    };
    let out = |r: Response| match r {
        Response::Extrinsic { result: Ok(m), .. } => m,
        other => panic!("{other:?}"),
    };
    let m = out(on_job("job-bad", "GetError", vec![]));
    assert_eq!(m.return_value, "0");
    let ParamValue::EmbeddedInstance(Some(e)) = &m.out[0].value else {
        panic!("{m:?}")
    };
    assert_eq!(e.class, "CIM_Error");
    assert_eq!(
        e.property("Message").unwrap().value,
        Some(Value::Scalar(crate::testing::BAD_JOB_ERROR.into()))
    );
    let m = out(on_job("job-bad", "GetErrors", vec![]));
    assert!(matches!(&m.out[0].value, ParamValue::EmbeddedInstances(v) if v.len() == 1));
    let m = out(on_job("job-done", "GetError", vec![]));
    assert_eq!(m.out[0].value, ParamValue::EmbeddedInstance(None));
    let state = param(
        "RequestedState",
        None,
        ParamValue::Value(Value::Scalar("4".into())),
    );
    let m = out(on_job("job-1", "RequestStateChange", vec![state]));
    assert_eq!(m.return_value, "0");
    assert_eq!(mock.calls().last().unwrap(), "RequestStateChange(job-1,4)");
    // a job that is not there: NOT_FOUND, as for any instance
    assert_eq!(
        cim_err(on_job("job-gone", "GetError", vec![])),
        status::NOT_FOUND
    );
}
