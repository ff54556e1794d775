//! The CIM operations, answered from the same [`Service`] the JSON-RPC API uses: instances are
//! built from its views on each request, and the two methods call it as JSON-RPC does, with
//! the same return values and reasons.
//!
//! Instances live in [`NS_STORAGE`]; the registered profiles (and their ties to the system
//! and the service) in the interop namespace, under either of its usual names.

use super::classes::{self, ClassInfo};
use super::xml::{
    datetime, interval, status, Call, CimError, CimType, IReturn, Instance, KeyValue, MethodReturn,
    ObjectPath, Param, ParamValue, Property, Request, Response, Value,
};
use crate::service::{JobView, RelationshipView, Service, StorageObjectView};
use std::cell::OnceCell;
use std::sync::Arc;

/// The namespace of the method page, holding this provider's instances.
pub const NS_STORAGE: &str = "root/cimv2/storage/iscsitarget";
/// The interop namespace's names (DSP1033 allows both).
pub const NS_INTEROP: [&str; 2] = ["interop", "root/interop"];

/// The `Name` of the one configuration service.
const SERVICE_NAME: &str = "lio-replica";
const CAPABILITIES_ID: &str = "LIO:StorageConfigurationCapabilities";
const POOL_ID: &str = "LIO:StoragePool:backstores";
/// Job InstanceIDs are the engine's job IDs behind this prefix (DSP0004's `OrgID:LocalID`).
const JOB_PREFIX: &str = "LIO:";

/// The profiles registered in interop: (name, version), all SNIA's (organization 11).
const PROFILES: [(&str, &str); 3] = [
    ("Array", "1.5.0"),
    ("Block Services", "1.5.0"),
    ("Replication Services", "1.5.0"),
];

type CimResult<T> = Result<T, CimError>;

fn err(code: u16, description: impl Into<String>) -> CimError {
    CimError::new(code, description)
}

/// Which of the served namespaces a request or path is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ns {
    Storage,
    /// `interop` or `root/interop`, as the client named it (paths go back the same way).
    Interop(&'static str),
}

impl Ns {
    pub fn parse(ns: &str) -> Option<Ns> {
        let ns = ns.trim_matches('/');
        if ns.eq_ignore_ascii_case(NS_STORAGE) {
            return Some(Ns::Storage);
        }
        NS_INTEROP
            .iter()
            .find(|n| n.eq_ignore_ascii_case(ns))
            .map(|n| Ns::Interop(n))
    }
    fn name(self) -> &'static str {
        match self {
            Ns::Storage => NS_STORAGE,
            Ns::Interop(n) => n,
        }
    }
    /// The classes with instances here: the profiles in interop, everything else in the
    /// storage namespace; their ties to the system and the service in both.
    fn holds(self, class: &ClassInfo) -> bool {
        match class.decl.name.as_str() {
            classes::REGISTERED_PROFILE => matches!(self, Ns::Interop(_)),
            classes::CONFORMS_TO_PROFILE => true,
            _ => self == Ns::Storage,
        }
    }
}

/// The CIM operations over one engine.
pub struct Provider {
    service: Arc<dyn Service>,
    /// The host's name: the ComputerSystem's Name and the HOST of full paths.
    host: String,
}

/// One request's view of the engine, each list read at most once.
struct Ctx<'a> {
    p: &'a Provider,
    volumes: OnceCell<CimResult<Vec<StorageObjectView>>>,
    rels: OnceCell<CimResult<Vec<RelationshipView>>>,
    jobs: OnceCell<Vec<JobView>>,
}

/// `PLUGIN/NAME`, the DeviceID of a storage object's volume.
pub fn device_id(element: &str) -> &str {
    element.strip_prefix("/backstores/").unwrap_or(element)
}

/// The NAA identifier LIO derives from a unit serial (IEEE Registered Extended, company ID
/// 0x001405, then the serial's first 25 hex digits): what the initiator reads in VPD page 0x83.
pub fn naa_of_serial(serial: &str) -> String {
    let digits: String = serial
        .chars()
        .filter(char::is_ascii_hexdigit)
        .take(25)
        .collect();
    format!("6001405{digits:0<25}").to_ascii_uppercase()
}

/// The optional parameter `name`: None when absent or NULL, else what `take` reads from its
/// value; a value `take` does not accept (None) is refused as not being `what`.
fn optional_param<T>(
    req: &Request,
    name: &str,
    what: &str,
    take: impl FnOnce(&ParamValue) -> Option<CimResult<T>>,
) -> CimResult<Option<T>> {
    match req.param(name).map(|p| &p.value) {
        None | Some(ParamValue::Null) => Ok(None),
        Some(v) => take(v).map(|r| r.map(Some)).unwrap_or_else(|| {
            Err(err(
                status::INVALID_PARAMETER,
                format!("{name} must be {what}"),
            ))
        }),
    }
}

fn scalar(v: &ParamValue) -> Option<&str> {
    match v {
        ParamValue::Value(Value::Scalar(s)) => Some(s),
        _ => None,
    }
}

fn bool_param(req: &Request, name: &str, default: bool) -> CimResult<bool> {
    let parsed = optional_param(req, name, "a boolean", |v| {
        scalar(v).map(|s| match s.trim() {
            t if t.eq_ignore_ascii_case("true") => Ok(true),
            t if t.eq_ignore_ascii_case("false") => Ok(false),
            t => Err(err(
                status::INVALID_PARAMETER,
                format!("{name}: {t:?} is not a boolean"),
            )),
        })
    })?;
    Ok(parsed.unwrap_or(default))
}

fn u16_param(req: &Request, name: &str) -> CimResult<Option<u16>> {
    optional_param(req, name, "a uint16", |v| {
        scalar(v).map(|s| {
            s.trim().parse().map_err(|_| {
                err(
                    status::INVALID_PARAMETER,
                    format!("{name}: {s:?} is not a uint16"),
                )
            })
        })
    })
}

fn class_param(req: &Request, name: &str) -> CimResult<Option<String>> {
    optional_param(req, name, "a class name", |v| match v {
        ParamValue::ClassName(c) => Some(Ok(c.clone())),
        _ => None,
    })
}

fn string_param(req: &Request, name: &str) -> CimResult<Option<String>> {
    optional_param(req, name, "a string", |v| {
        scalar(v).map(|s| Ok(s.to_string()))
    })
}

fn property_list(req: &Request) -> CimResult<Option<Vec<String>>> {
    optional_param(
        req,
        "PropertyList",
        "an array of property names",
        |v| match v {
            ParamValue::Value(Value::Array(a)) => Some(Ok(a.clone())),
            _ => None,
        },
    )
}

/// An object name given as InstanceName/ObjectName: an instance path or a class name.
fn path_param(req: &Request, name: &str) -> CimResult<ObjectPath> {
    match req.param(name).map(|p| &p.value) {
        Some(ParamValue::InstanceName(p)) => Ok(p.clone()),
        Some(ParamValue::ClassName(c)) => Ok(ObjectPath::new(c)),
        Some(ParamValue::Value(Value::Reference(p))) => Ok(p.clone()),
        None | Some(ParamValue::Null) => Err(err(
            status::INVALID_PARAMETER,
            format!("{name} is required"),
        )),
        Some(_) => Err(err(
            status::INVALID_PARAMETER,
            format!("{name} must be an instance name"),
        )),
    }
}

/// Refuses parameters the operation does not define (DSP0200: CIM_ERR_INVALID_PARAMETER).
fn only_params(req: &Request, allowed: &[&str]) -> CimResult<()> {
    match req
        .params
        .iter()
        .find(|p| !allowed.iter().any(|a| a.eq_ignore_ascii_case(&p.name)))
    {
        Some(p) => Err(err(
            status::INVALID_PARAMETER,
            format!("{} has no parameter {}", req.call.name(), p.name),
        )),
        None => Ok(()),
    }
}

fn known_class(name: &str) -> CimResult<&'static ClassInfo> {
    classes::find(name).ok_or_else(|| err(status::INVALID_CLASS, format!("no class {name}")))
}

/// Keeps the properties named in `list` (all when None) and, when `only_of` is given, those
/// the class `only_of` has (EnumerateInstances with DeepInheritance false).
fn filter_properties(
    mut i: Instance,
    list: Option<&[String]>,
    only_of: Option<&ClassInfo>,
) -> Instance {
    if let Some(list) = list {
        i.properties
            .retain(|p| list.iter().any(|n| n.eq_ignore_ascii_case(&p.name)));
    }
    if let Some(c) = only_of {
        i.properties.retain(|p| c.has_property(&p.name));
    }
    i
}

fn u16_array(v: &[u16]) -> Vec<String> {
    v.iter().map(u16::to_string).collect()
}

impl Provider {
    pub fn new(service: Arc<dyn Service>, host: impl Into<String>) -> Provider {
        Provider {
            service,
            host: host.into(),
        }
    }

    /// Answers one request. Never fails: every problem is a CIM error in the response.
    pub fn handle(&self, req: &Request) -> Response {
        let ctx = Ctx {
            p: self,
            volumes: OnceCell::new(),
            rels: OnceCell::new(),
            jobs: OnceCell::new(),
        };
        match &req.call {
            Call::Intrinsic { name, namespace } => Response::Intrinsic {
                name: name.clone(),
                result: Ns::parse(namespace)
                    .ok_or_else(|| {
                        err(
                            status::INVALID_NAMESPACE,
                            format!("no namespace {namespace}"),
                        )
                    })
                    .and_then(|ns| ctx.intrinsic(name, ns, req)),
            },
            Call::Extrinsic { name, target } => Response::Extrinsic {
                name: name.clone(),
                result: ctx.extrinsic(name, target, req),
            },
        }
    }

    fn path(&self, class: &str, ns: Ns) -> ObjectPath {
        ObjectPath::new(class).in_namespace(Some(&self.host), ns.name())
    }

    fn system_path(&self) -> ObjectPath {
        self.path(classes::COMPUTER_SYSTEM, Ns::Storage)
            .with_string_key("CreationClassName", classes::COMPUTER_SYSTEM)
            .with_string_key("Name", &self.host)
    }

    fn service_path(&self) -> ObjectPath {
        self.path(classes::CONFIG_SERVICE, Ns::Storage)
            .with_string_key("SystemCreationClassName", classes::COMPUTER_SYSTEM)
            .with_string_key("SystemName", &self.host)
            .with_string_key("CreationClassName", classes::CONFIG_SERVICE)
            .with_string_key("Name", SERVICE_NAME)
    }

    fn capabilities_path(&self) -> ObjectPath {
        self.path(classes::CAPABILITIES, Ns::Storage)
            .with_string_key("InstanceID", CAPABILITIES_ID)
    }

    fn pool_path(&self) -> ObjectPath {
        self.path(classes::POOL, Ns::Storage)
            .with_string_key("InstanceID", POOL_ID)
    }

    pub fn volume_path(&self, element: &str) -> ObjectPath {
        self.path(classes::VOLUME, Ns::Storage)
            .with_string_key("SystemCreationClassName", classes::COMPUTER_SYSTEM)
            .with_string_key("SystemName", &self.host)
            .with_string_key("CreationClassName", classes::VOLUME)
            .with_string_key("DeviceID", device_id(element))
    }

    fn job_path(&self, id: &str) -> ObjectPath {
        self.path(classes::JOB, Ns::Storage)
            .with_string_key("InstanceID", &format!("{JOB_PREFIX}{id}"))
    }

    fn profile_path(&self, name: &str, ns: Ns) -> ObjectPath {
        self.path(classes::REGISTERED_PROFILE, ns)
            .with_string_key("InstanceID", &format!("SNIA:{name}"))
    }

    /// An association instance tying `a` (as `role_a`) to `b` (as `role_b`).
    fn assoc(
        &self,
        class: &str,
        ns: Ns,
        (role_a, class_a, a): (&str, &str, ObjectPath),
        (role_b, class_b, b): (&str, &str, ObjectPath),
        extra: Vec<Property>,
    ) -> (ObjectPath, Instance) {
        let path = self
            .path(class, ns)
            .with_key(role_a, KeyValue::Reference(Box::new(a.clone())))
            .with_key(role_b, KeyValue::Reference(Box::new(b.clone())));
        let mut properties = vec![
            Property::reference(role_a, class_a, a),
            Property::reference(role_b, class_b, b),
        ];
        properties.extend(extra);
        (
            path,
            Instance {
                class: class.to_string(),
                properties,
            },
        )
    }
}

/// A key of `path` as a string, or an error naming what is wrong with the reference.
fn string_key<'a>(path: &'a ObjectPath, key: &str, what: &str) -> CimResult<&'a str> {
    path.key(key)
        .and_then(KeyValue::as_str)
        .ok_or_else(|| err(status::INVALID_PARAMETER, format!("{what} has no {key}")))
}

impl Ctx<'_> {
    fn volumes(&self) -> CimResult<&[StorageObjectView]> {
        self.volumes
            .get_or_init(|| {
                self.p
                    .service
                    .storage_objects()
                    .map_err(|e| err(status::FAILED, e.to_string()))
            })
            .as_deref()
            .map_err(Clone::clone)
    }
    fn rels(&self) -> CimResult<&[RelationshipView]> {
        self.rels
            .get_or_init(|| {
                self.p
                    .service
                    .relationships()
                    .map_err(|e| err(status::FAILED, e.to_string()))
            })
            .as_deref()
            .map_err(Clone::clone)
    }
    fn jobs(&self) -> &[JobView] {
        self.jobs.get_or_init(|| self.p.service.jobs())
    }

    /// Every instance of the concrete class `class` in `ns`, with its full path.
    fn instances_of(&self, class: &ClassInfo, ns: Ns) -> CimResult<Vec<(ObjectPath, Instance)>> {
        if !ns.holds(class) {
            return Ok(Vec::new());
        }
        let p = self.p;
        let host = p.host.as_str();
        let one = |path: ObjectPath, properties: Vec<Property>| {
            vec![(
                path,
                Instance {
                    class: class.decl.name.clone(),
                    properties,
                },
            )]
        };
        Ok(match class.decl.name.as_str() {
            classes::COMPUTER_SYSTEM => one(
                p.system_path(),
                vec![
                    Property::string("CreationClassName", classes::COMPUTER_SYSTEM),
                    Property::string("Name", host),
                    Property::string("ElementName", host),
                    Property::string("NameFormat", "Other"),
                    Property::array("OperationalStatus", CimType::Uint16, u16_array(&[2])),
                    // 3: Storage
                    Property::array("Dedicated", CimType::Uint16, u16_array(&[3])),
                ],
            ),
            classes::CONFIG_SERVICE => one(
                p.service_path(),
                vec![
                    Property::string("SystemCreationClassName", classes::COMPUTER_SYSTEM),
                    Property::string("SystemName", host),
                    Property::string("CreationClassName", classes::CONFIG_SERVICE),
                    Property::string("Name", SERVICE_NAME),
                    Property::string("ElementName", "lio-replica replication service"),
                    Property::array("OperationalStatus", CimType::Uint16, u16_array(&[2])),
                    // 2: Enabled
                    Property::number("EnabledState", CimType::Uint16, 2),
                ],
            ),
            classes::CAPABILITIES => one(
                p.capabilities_path(),
                vec![
                    Property::string("InstanceID", CAPABILITIES_ID),
                    Property::string("ElementName", "lio-replica replication capabilities"),
                    // 9: Replica Modification, 10: Replica Attachment
                    Property::array(
                        "SupportedAsynchronousActions",
                        CimType::Uint16,
                        u16_array(&[9, 10]),
                    ),
                    Property::array(
                        "SupportedSynchronousActions",
                        CimType::Uint16,
                        u16_array(&[9]),
                    ),
                    // 2: StorageVolume
                    Property::array(
                        "SupportedStorageElementTypes",
                        CimType::Uint16,
                        u16_array(&[2]),
                    ),
                    Property::array(
                        "SupportedCopyTypes",
                        CimType::Uint16,
                        u16_array(&[2, 3, 4, 5]),
                    ),
                ],
            ),
            classes::ELEMENT_CAPABILITIES => vec![p.assoc(
                classes::ELEMENT_CAPABILITIES,
                ns,
                ("ManagedElement", "CIM_ManagedElement", p.service_path()),
                ("Capabilities", "CIM_Capabilities", p.capabilities_path()),
                vec![],
            )],
            classes::HOSTED_SERVICE => vec![p.assoc(
                classes::HOSTED_SERVICE,
                ns,
                ("Antecedent", "CIM_System", p.system_path()),
                ("Dependent", "CIM_Service", p.service_path()),
                vec![],
            )],
            classes::POOL => {
                let total: u64 = self.volumes()?.iter().filter_map(|v| v.size_bytes).sum();
                one(
                    p.pool_path(),
                    vec![
                        Property::string("InstanceID", POOL_ID),
                        Property::string("PoolID", "backstores"),
                        Property::string("ElementName", "LIO backstores"),
                        Property::boolean("Primordial", false),
                        Property::number("TotalManagedSpace", CimType::Uint64, total),
                        Property::number("RemainingManagedSpace", CimType::Uint64, 0),
                        Property::array("OperationalStatus", CimType::Uint16, u16_array(&[2])),
                    ],
                )
            }
            classes::HOSTED_POOL => vec![p.assoc(
                classes::HOSTED_POOL,
                ns,
                ("GroupComponent", "CIM_System", p.system_path()),
                ("PartComponent", "CIM_StoragePool", p.pool_path()),
                vec![],
            )],
            classes::VOLUME => self
                .volumes()?
                .iter()
                .map(|v| (p.volume_path(&v.element), self.volume(v)))
                .collect(),
            classes::ALLOCATED_FROM_POOL => self
                .volumes()?
                .iter()
                .map(|v| {
                    p.assoc(
                        classes::ALLOCATED_FROM_POOL,
                        ns,
                        ("Antecedent", "CIM_StoragePool", p.pool_path()),
                        ("Dependent", "CIM_LogicalElement", p.volume_path(&v.element)),
                        vec![Property::opt_number(
                            "SpaceConsumed",
                            CimType::Uint64,
                            v.size_bytes,
                        )],
                    )
                })
                .collect(),
            classes::JOB => self
                .jobs()
                .iter()
                .map(|j| (p.job_path(&j.instance_id), job(j)))
                .collect(),
            classes::AFFECTED_JOB_ELEMENT => self
                .jobs()
                .iter()
                .flat_map(|j| {
                    // 3: Performance Impact (the source is read), 5: Create (the target)
                    [(&j.source, 3u16), (&j.target, 5)].map(|(element, effect)| {
                        p.assoc(
                            classes::AFFECTED_JOB_ELEMENT,
                            ns,
                            (
                                "AffectedElement",
                                "CIM_ManagedElement",
                                p.volume_path(element),
                            ),
                            ("AffectingElement", "CIM_Job", p.job_path(&j.instance_id)),
                            vec![Property::array(
                                "ElementEffects",
                                CimType::Uint16,
                                u16_array(&[effect]),
                            )],
                        )
                    })
                })
                .collect(),
            classes::SYNCHRONIZED => self
                .rels()?
                .iter()
                .map(|r| {
                    let (path, mut i) = p.assoc(
                        classes::SYNCHRONIZED,
                        ns,
                        (
                            "SystemElement",
                            "CIM_ManagedElement",
                            p.volume_path(&r.system_element),
                        ),
                        (
                            "SyncedElement",
                            "CIM_ManagedElement",
                            p.volume_path(&r.synced_element),
                        ),
                        vec![],
                    );
                    i.properties.extend(synchronized(r));
                    (path, i)
                })
                .collect(),
            classes::REGISTERED_PROFILE => PROFILES
                .iter()
                .map(|(name, version)| {
                    (
                        p.profile_path(name, ns),
                        Instance {
                            class: classes::REGISTERED_PROFILE.to_string(),
                            properties: vec![
                                Property::string("InstanceID", format!("SNIA:{name}")),
                                // 11: SNIA
                                Property::number("RegisteredOrganization", CimType::Uint16, 11),
                                Property::string("RegisteredName", *name),
                                Property::string("RegisteredVersion", *version),
                                // 2: Not Advertised
                                Property::array("AdvertiseTypes", CimType::Uint16, u16_array(&[2])),
                            ],
                        },
                    )
                })
                .collect(),
            classes::CONFORMS_TO_PROFILE => PROFILES
                .iter()
                .map(|(name, _)| {
                    // the Array profile's central instance is the system; the other two
                    // are served by the configuration service
                    let element = if *name == "Array" {
                        p.system_path()
                    } else {
                        p.service_path()
                    };
                    let profile_ns = match ns {
                        Ns::Interop(_) => ns,
                        Ns::Storage => Ns::Interop(NS_INTEROP[0]),
                    };
                    p.assoc(
                        classes::CONFORMS_TO_PROFILE,
                        ns,
                        (
                            "ConformantStandard",
                            "CIM_RegisteredProfile",
                            p.profile_path(name, profile_ns),
                        ),
                        ("ManagedElement", "CIM_ManagedElement", element),
                        vec![],
                    )
                })
                .collect(),
            _ => Vec::new(),
        })
    }

    fn volume(&self, v: &StorageObjectView) -> Instance {
        let p = self.p;
        let block = v.block_size.unwrap_or(512);
        let blocks = v.size_bytes.map(|s| s / u64::from(block));
        let mut properties = vec![
            Property::string("SystemCreationClassName", classes::COMPUTER_SYSTEM),
            Property::string("SystemName", p.host.as_str()),
            Property::string("CreationClassName", classes::VOLUME),
            Property::string("DeviceID", device_id(&v.element)),
            Property::string("ElementName", v.name.as_str()),
            Property::number("BlockSize", CimType::Uint64, block),
            Property::opt_number("NumberOfBlocks", CimType::Uint64, blocks),
            Property::opt_number("ConsumableBlocks", CimType::Uint64, blocks),
            Property::boolean("Primordial", false),
            Property::array(
                "OperationalStatus",
                CimType::Uint16,
                // 2: OK, 10: Stopped
                u16_array(&[if v.enabled { 2 } else { 10 }]),
            ),
            Property::string("Element", v.element.as_str()),
            Property::string("Plugin", v.plugin.as_str()),
            Property::opt_string("Device", v.device.as_deref()),
            Property::boolean("ReadOnly", v.readonly),
            Property::array("ExportedBy", CimType::String, v.exported_by.clone()),
            Property::boolean("Adopted", v.adopted),
            Property::opt_string("Relationship", v.relationship.as_deref()),
        ];
        if let Some(serial) = &v.wwn {
            properties.extend([
                Property::string("Name", naa_of_serial(serial)),
                // 9: NAA; 2: VPD83Type3
                Property::number("NameFormat", CimType::Uint16, 9),
                Property::number("NameNamespace", CimType::Uint16, 2),
            ]);
        }
        Instance {
            class: classes::VOLUME.to_string(),
            properties,
        }
    }

    /// Every instance of `class` and its subclasses in `ns`.
    fn instances(&self, class: &ClassInfo, ns: Ns) -> CimResult<Vec<(ObjectPath, Instance)>> {
        let mut out = Vec::new();
        for c in classes::concrete().filter(|c| c.is_a(&class.decl.name)) {
            out.extend(self.instances_of(c, ns)?);
        }
        Ok(out)
    }

    /// The instance at `path` (its namespace, else `ns`).
    fn find(&self, path: &ObjectPath, ns: Ns) -> CimResult<(ObjectPath, Instance)> {
        let class = known_class(&path.class)?;
        let ns = match &path.namespace {
            Some(n) => Ns::parse(n)
                .ok_or_else(|| err(status::INVALID_NAMESPACE, format!("no namespace {n}")))?,
            None => ns,
        };
        self.instances_of(class, ns)?
            .into_iter()
            .find(|(p, _)| p.same_instance(path))
            .ok_or_else(|| err(status::NOT_FOUND, format!("no instance {}", describe(path))))
    }

    fn intrinsic(&self, name: &str, ns: Ns, req: &Request) -> CimResult<IReturn> {
        match name {
            "GetClass" => {
                only_params(
                    req,
                    &[
                        "ClassName",
                        "LocalOnly",
                        "IncludeQualifiers",
                        "IncludeClassOrigin",
                        "PropertyList",
                    ],
                )?;
                let c = class_param(req, "ClassName")?
                    .ok_or_else(|| err(status::INVALID_PARAMETER, "ClassName is required"))?;
                let info = known_class(&c)?;
                Ok(IReturn::Class(classes::shaped(
                    info,
                    bool_param(req, "LocalOnly", true)?,
                    bool_param(req, "IncludeQualifiers", true)?,
                    bool_param(req, "IncludeClassOrigin", false)?,
                    property_list(req)?.as_deref(),
                )))
            }
            "EnumerateClassNames" | "EnumerateClasses" => {
                let mut allowed = vec!["ClassName", "DeepInheritance"];
                if name == "EnumerateClasses" {
                    allowed.extend(["LocalOnly", "IncludeQualifiers", "IncludeClassOrigin"]);
                }
                only_params(req, &allowed)?;
                let parent = class_param(req, "ClassName")?;
                if let Some(p) = &parent {
                    known_class(p)?;
                }
                let deep = bool_param(req, "DeepInheritance", false)?;
                let found = classes::all().iter().filter(|c| match (&parent, deep) {
                    (None, true) => true,
                    (None, false) => c.decl.superclass.is_none(),
                    (Some(p), false) => c
                        .decl
                        .superclass
                        .as_deref()
                        .is_some_and(|s| s.eq_ignore_ascii_case(p)),
                    (Some(p), true) => c.is_a(p) && !c.decl.name.eq_ignore_ascii_case(p),
                });
                if name == "EnumerateClassNames" {
                    Ok(IReturn::ClassNames(
                        found.map(|c| c.decl.name.clone()).collect(),
                    ))
                } else {
                    let local = bool_param(req, "LocalOnly", true)?;
                    let quals = bool_param(req, "IncludeQualifiers", true)?;
                    let origin = bool_param(req, "IncludeClassOrigin", false)?;
                    Ok(IReturn::Classes(
                        found
                            .map(|c| classes::shaped(c, local, quals, origin, None))
                            .collect(),
                    ))
                }
            }
            "EnumerateInstances" | "EnumerateInstanceNames" => {
                let names = name == "EnumerateInstanceNames";
                if names {
                    only_params(req, &["ClassName"])?;
                } else {
                    only_params(
                        req,
                        &[
                            "ClassName",
                            "LocalOnly",
                            "DeepInheritance",
                            "IncludeQualifiers",
                            "IncludeClassOrigin",
                            "PropertyList",
                        ],
                    )?;
                }
                let c = class_param(req, "ClassName")?
                    .ok_or_else(|| err(status::INVALID_PARAMETER, "ClassName is required"))?;
                let info = known_class(&c)?;
                let found = self.instances(info, ns)?;
                if names {
                    return Ok(IReturn::InstanceNames(
                        found.into_iter().map(|(p, _)| p).collect(),
                    ));
                }
                let list = property_list(req)?;
                let shallow = (!bool_param(req, "DeepInheritance", true)?).then_some(info);
                Ok(IReturn::NamedInstances(
                    found
                        .into_iter()
                        .map(|(p, i)| (p, filter_properties(i, list.as_deref(), shallow)))
                        .collect(),
                ))
            }
            "GetInstance" => {
                only_params(
                    req,
                    &[
                        "InstanceName",
                        "LocalOnly",
                        "IncludeQualifiers",
                        "IncludeClassOrigin",
                        "PropertyList",
                    ],
                )?;
                let path = path_param(req, "InstanceName")?;
                let (_, i) = self.find(
                    &ObjectPath {
                        namespace: None,
                        ..path
                    },
                    ns,
                )?;
                Ok(IReturn::Instance(filter_properties(
                    i,
                    property_list(req)?.as_deref(),
                    None,
                )))
            }
            "Associators" | "AssociatorNames" | "References" | "ReferenceNames" => {
                self.traverse(name, ns, req)
            }
            other => Err(err(
                status::NOT_SUPPORTED,
                format!("{other} is not supported by this server"),
            )),
        }
    }

    /// Associators, AssociatorNames, References and ReferenceNames.
    fn traverse(&self, op: &str, ns: Ns, req: &Request) -> CimResult<IReturn> {
        let associators = op.starts_with("Associator");
        let names = op.ends_with("Names");
        let mut allowed = vec!["ObjectName", "ResultClass", "Role"];
        if associators {
            allowed.extend(["AssocClass", "ResultRole"]);
        }
        if !names {
            allowed.extend(["IncludeQualifiers", "IncludeClassOrigin", "PropertyList"]);
        }
        only_params(req, &allowed)?;
        let object = path_param(req, "ObjectName")?;
        known_class(&object.class)?;
        if object.keys.is_empty() {
            return Err(err(
                status::NOT_SUPPORTED,
                "associations of classes (schema queries) are not supported; name an instance",
            ));
        }
        let object = ObjectPath {
            namespace: None,
            ..object
        };
        let assoc_class = match class_param(
            req,
            if associators {
                "AssocClass"
            } else {
                "ResultClass"
            },
        )? {
            Some(c) => Some(known_class(&c)?),
            None => None,
        };
        let result_class = match associators
            .then(|| class_param(req, "ResultClass"))
            .transpose()?
            .flatten()
        {
            Some(c) => Some(known_class(&c)?),
            None => None,
        };
        let role = string_param(req, "Role")?;
        let result_role = string_param(req, "ResultRole")?;
        let list = property_list(req)?;
        let matches_role = |name: &str, role: &Option<String>| {
            role.as_deref().is_none_or(|r| r.eq_ignore_ascii_case(name))
        };

        let mut out: Vec<(ObjectPath, Instance)> = Vec::new();
        let mut seen: Vec<ObjectPath> = Vec::new();
        for c in classes::concrete()
            .filter(|c| c.is_association() && assoc_class.is_none_or(|a| c.is_a(&a.decl.name)))
        {
            for (apath, ainst) in self.instances_of(c, ns)? {
                let refs: Vec<(&str, &ObjectPath)> = ainst
                    .properties
                    .iter()
                    .filter_map(|p| match &p.value {
                        Some(Value::Reference(r)) => Some((p.name.as_str(), r)),
                        _ => None,
                    })
                    .collect();
                let Some(&(own_role, _)) = refs
                    .iter()
                    .find(|(n, r)| matches_role(n, &role) && r.same_instance(&object))
                else {
                    continue;
                };
                if !associators {
                    out.push((apath, filter_properties(ainst, list.as_deref(), None)));
                    continue;
                }
                for &(other_role, other) in &refs {
                    if other_role == own_role
                        || !matches_role(other_role, &result_role)
                        || result_class.is_some_and(|rc| {
                            classes::find(&other.class).is_none_or(|oc| !oc.is_a(&rc.decl.name))
                        })
                        || seen.iter().any(|s| s.same_instance(other))
                    {
                        continue;
                    }
                    seen.push(other.clone());
                    if names {
                        out.push((other.clone(), Instance::default()));
                    } else if let Ok((p, i)) = self.find(other, ns) {
                        out.push((p, filter_properties(i, list.as_deref(), None)));
                    }
                }
            }
        }
        Ok(if names {
            IReturn::ObjectPaths(out.into_iter().map(|(p, _)| p).collect())
        } else {
            IReturn::ObjectsWithPath(out)
        })
    }

    fn extrinsic(
        &self,
        method: &str,
        target: &ObjectPath,
        req: &Request,
    ) -> CimResult<MethodReturn> {
        let ns_name = target.namespace.as_deref().unwrap_or_default();
        let ns = Ns::parse(ns_name)
            .ok_or_else(|| err(status::INVALID_NAMESPACE, format!("no namespace {ns_name}")))?;
        let class = known_class(&target.class)?;
        let decl = class.method(method).ok_or_else(|| {
            err(
                status::METHOD_NOT_FOUND,
                format!("{} has no method {method}", class.decl.name),
            )
        })?;
        if target.keys.is_empty() {
            return Err(err(
                status::INVALID_PARAMETER,
                format!("{method} is called on an instance, not on the class"),
            ));
        }
        // the instance must exist, and the method must be one this provider implements
        let (_, inst) = self.find(
            &ObjectPath {
                namespace: None,
                ..target.clone()
            },
            ns,
        )?;
        for p in &req.params {
            let Some(d) = decl
                .parameters
                .iter()
                .find(|d| d.name.eq_ignore_ascii_case(&p.name))
            else {
                return Err(err(
                    status::INVALID_PARAMETER,
                    format!("{method} has no parameter {}", p.name),
                ));
            };
            if !d.qualifiers.iter().any(|q| q.name == "In") {
                return Err(err(
                    status::INVALID_PARAMETER,
                    format!("{} is an output parameter of {method}", d.name),
                ));
            }
        }
        let service = &self.p.service;
        match (inst.class.as_str(), decl.name.as_str()) {
            (classes::CONFIG_SERVICE, "AttachReplica") => {
                let source = self.volume_param(req, "SourceElement")?;
                let target = self.volume_param(req, "TargetElement")?;
                let copy_type = u16_param(req, "CopyType")?
                    .ok_or_else(|| err(status::INVALID_PARAMETER, "CopyType is required"))?;
                let r = service.attach_replica(&source, &target, copy_type);
                Ok(self.method_result(r.return_value, r.job.as_deref(), r.description))
            }
            (classes::CONFIG_SERVICE, "ModifySynchronization") => {
                let operation = u16_param(req, "Operation")?
                    .ok_or_else(|| err(status::INVALID_PARAMETER, "Operation is required"))?;
                let force = bool_param(req, "Force", false)?;
                let sync = match req.param("Synchronization").map(|p| &p.value) {
                    Some(ParamValue::Value(Value::Reference(p))) => p.clone(),
                    Some(ParamValue::InstanceName(p)) => p.clone(),
                    _ => {
                        return Err(err(
                            status::INVALID_PARAMETER,
                            "Synchronization must be a reference to a CIM_StorageSynchronized",
                        ))
                    }
                };
                // a relationship that does not exist is refused as JSON-RPC refuses it: 5
                let id = match self.relationship_of(&sync) {
                    Ok(id) => id,
                    Err(e) if e.code == status::NOT_FOUND => {
                        return Ok(self.method_result(5, None, Some(e.description)))
                    }
                    Err(e) => return Err(e),
                };
                let r = service.modify_synchronization(&id, operation, force);
                Ok(self.method_result(r.return_value, r.job.as_deref(), r.description))
            }
            (classes::JOB, m) => {
                let id = job_id(target)?;
                match m {
                    "RequestStateChange" => {
                        let state = u16_param(req, "RequestedState")?.ok_or_else(|| {
                            err(status::INVALID_PARAMETER, "RequestedState is required")
                        })?;
                        let r = service.request_state_change(id, state);
                        Ok(MethodReturn {
                            return_type: CimType::Uint32,
                            return_value: r.return_value.to_string(),
                            out: vec![],
                        })
                    }
                    "GetError" | "GetErrors" => {
                        let e = service
                            .get_error(id)
                            .ok_or_else(|| err(status::NOT_FOUND, format!("no job {id}")))?;
                        let error = e.as_deref().map(cim_error);
                        let (name, value) = if m == "GetError" {
                            ("Error", ParamValue::EmbeddedInstance(error))
                        } else {
                            (
                                "Errors",
                                ParamValue::EmbeddedInstances(error.into_iter().collect()),
                            )
                        };
                        Ok(MethodReturn {
                            return_type: CimType::Uint32,
                            return_value: "0".into(),
                            out: vec![Param {
                                name: name.into(),
                                ty: Some(CimType::String),
                                value,
                            }],
                        })
                    }
                    _ => Err(not_available(method)),
                }
            }
            _ => Err(not_available(method)),
        }
    }

    /// The Job and Description out parameters of AttachReplica and ModifySynchronization.
    fn method_result(
        &self,
        rv: u32,
        job: Option<&str>,
        description: Option<String>,
    ) -> MethodReturn {
        let mut out = Vec::new();
        if let Some(j) = job {
            out.push(Param {
                name: "Job".into(),
                ty: Some(CimType::Reference),
                value: ParamValue::Value(Value::Reference(self.p.job_path(j))),
            });
        }
        if let Some(d) = description {
            out.push(Param {
                name: "Description".into(),
                ty: Some(CimType::String),
                value: ParamValue::Value(Value::Scalar(d)),
            });
        }
        MethodReturn {
            return_type: CimType::Uint32,
            return_value: rv.to_string(),
            out,
        }
    }

    /// The storage object a SourceElement/TargetElement reference names (`PLUGIN/NAME`). A
    /// volume that does not exist is left for the engine to refuse, with its own reason.
    fn volume_param(&self, req: &Request, name: &str) -> CimResult<String> {
        let path = match req.param(name).map(|p| &p.value) {
            Some(ParamValue::Value(Value::Reference(p))) | Some(ParamValue::InstanceName(p)) => p,
            None | Some(ParamValue::Null) => {
                return Err(err(
                    status::INVALID_PARAMETER,
                    format!("{name} is required"),
                ))
            }
            Some(_) => {
                return Err(err(
                    status::INVALID_PARAMETER,
                    format!("{name} must be a reference to a storage volume"),
                ))
            }
        };
        if !classes::find(&path.class).is_some_and(|c| c.is_a("CIM_StorageVolume")) {
            return Err(err(
                status::INVALID_PARAMETER,
                format!("{name} refers to a {}, not to a storage volume", path.class),
            ));
        }
        Ok(string_key(path, "DeviceID", name)?.to_string())
    }

    /// The engine's ID of the relationship a StorageSynchronized reference names.
    fn relationship_of(&self, sync: &ObjectPath) -> CimResult<String> {
        let element = |key: &str| match sync.key(key) {
            Some(KeyValue::Reference(p)) => string_key(p, "DeviceID", key).map(str::to_string),
            _ => Err(err(
                status::INVALID_PARAMETER,
                format!("Synchronization has no {key} reference"),
            )),
        };
        let (source, target) = (element("SystemElement")?, element("SyncedElement")?);
        self.rels()?
            .iter()
            .find(|r| {
                device_id(&r.system_element) == source && device_id(&r.synced_element) == target
            })
            .map(|r| r.instance_id.clone())
            .ok_or_else(|| {
                err(
                    status::NOT_FOUND,
                    format!("no relationship from {source} to {target}"),
                )
            })
    }
}

fn not_available(method: &str) -> CimError {
    err(
        status::METHOD_NOT_AVAILABLE,
        format!("{method} is not available on this instance"),
    )
}

fn job_id(path: &ObjectPath) -> CimResult<&str> {
    let id = string_key(path, "InstanceID", "the job")?;
    id.strip_prefix(JOB_PREFIX)
        .ok_or_else(|| err(status::NOT_FOUND, format!("no job {id}")))
}

fn describe(p: &ObjectPath) -> String {
    let keys: Vec<String> = p
        .keys
        .iter()
        .map(|(k, v)| match v {
            KeyValue::Reference(r) => format!("{k}=<{}>", describe(r)),
            KeyValue::Boolean(b) => format!("{k}={b}"),
            KeyValue::String(s) | KeyValue::Numeric(s) => format!("{k}={s:?}"),
        })
        .collect();
    format!("{}.{}", p.class, keys.join(","))
}

/// A CIM_Error for a job's error text (GetError and GetErrors).
fn cim_error(text: &str) -> Instance {
    Instance {
        class: "CIM_Error".into(),
        properties: vec![
            // 4: Software Error; 6: Fatal/NonRecoverable; 1: CIM_ERR_FAILED
            Property::number("ErrorType", CimType::Uint16, 4),
            Property::number("PerceivedSeverity", CimType::Uint16, 6),
            Property::number("CIMStatusCode", CimType::Uint32, 1),
            Property::string("Message", text),
            Property::string("OwningEntity", "lio-replica"),
        ],
    }
}

fn job(j: &JobView) -> Instance {
    use crate::cim::JobState;
    let state = JobState::from_value(j.job_state);
    // SMI-S clients look for 17 Completed with 2 OK (or 6 Error) once a job has ended
    let status: &[u16] = match state {
        Some(JobState::Completed) => &[2, 17],
        Some(JobState::Exception) => &[6, 17],
        Some(JobState::Terminated | JobState::Killed) => &[10, 17],
        _ => &[2],
    };
    Instance {
        class: classes::JOB.to_string(),
        properties: vec![
            Property::string("InstanceID", format!("{JOB_PREFIX}{}", j.instance_id)),
            Property::string("Name", j.name.as_str()),
            Property::string("ElementName", j.name.as_str()),
            Property::number("JobState", CimType::Uint16, j.job_state),
            Property::string("JobStatus", j.job_state_name.as_str()),
            Property::array("OperationalStatus", CimType::Uint16, u16_array(status)),
            Property::number("PercentComplete", CimType::Uint16, j.percent_complete),
            Property::datetime("TimeSubmitted", Some(datetime(j.time_submitted))),
            Property::datetime("StartTime", j.start_time.map(datetime)),
            Property::datetime("ElapsedTime", Some(interval(j.elapsed_time))),
            Property::datetime(
                "TimeBeforeRemoval",
                Some(interval(j.time_before_removal as f64)),
            ),
            Property::boolean("DeleteOnCompletion", j.delete_on_completion),
            Property::number(
                "ErrorCode",
                CimType::Uint16,
                u16::try_from(j.error_code).unwrap_or(u16::MAX),
            ),
            Property::opt_string("ErrorDescription", j.error_description.as_deref()),
            Property::string("SourceElement", device_id(&j.source)),
            Property::string("TargetElement", device_id(&j.target)),
            Property::number("CopyType", CimType::Uint16, j.copy_type),
            Property::opt_string("Relationship", j.relationship.as_deref()),
        ],
    }
}

fn synchronized(r: &RelationshipView) -> Vec<Property> {
    // SyncType 6 Mirror, 7 Snapshot, 8 Clone; Mode 2 Synchronous, 3 Asynchronous
    let (sync_type, mode) = match r.copy_type {
        2 => (Some(6), Some(3)),
        3 => (Some(6), Some(2)),
        4 => (Some(7), None),
        5 => (Some(8), None),
        _ => (None, None),
    };
    vec![
        Property::string("InstanceID", r.instance_id.as_str()),
        Property::number("CopyType", CimType::Uint16, r.copy_type),
        Property::number("SyncState", CimType::Uint16, r.sync_state),
        Property::boolean("SyncMaintained", r.sync_maintained),
        Property::number("PercentSynced", CimType::Uint16, r.percent_synced),
        Property::datetime("WhenSynced", r.when_synced.map(datetime)),
        Property::opt_number("SyncType", CimType::Uint16, sync_type),
        Property::opt_number("Mode", CimType::Uint16, mode),
        Property::opt_string("StatusDescription", r.progress_status.as_deref()),
        Property::boolean("ChangeTracking", r.change_tracking),
        Property::opt_number("MaxLagWrites", CimType::Uint32, r.max_lag_writes),
        Property::opt_number("CowUsedSectors", CimType::Uint64, r.cow_used_sectors),
        Property::opt_number("CowTotalSectors", CimType::Uint64, r.cow_total_sectors),
    ]
}
