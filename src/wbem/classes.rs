//! The classes the WBEM server knows: this provider's `LIO_` classes and the `CIM_` classes
//! they derive from, with the properties and methods the provider fills in. DMTF's schema
//! defines many more properties for the `CIM_` classes; only those served are declared, so
//! that GetClass describes what instances actually carry.

use super::xml::{CimType, ClassDecl, MethodDecl, ParameterDecl, PropertyDecl, Qualifier};
use std::sync::OnceLock;

/// The prefix of this provider's classes (the schema name, in DSP0004's terms).
pub const PREFIX: &str = "LIO_";

pub const COMPUTER_SYSTEM: &str = "LIO_ComputerSystem";
pub const CONFIG_SERVICE: &str = "LIO_StorageConfigurationService";
pub const CAPABILITIES: &str = "LIO_StorageConfigurationCapabilities";
pub const ELEMENT_CAPABILITIES: &str = "LIO_ElementCapabilities";
pub const HOSTED_SERVICE: &str = "LIO_HostedService";
pub const VOLUME: &str = "LIO_StorageVolume";
pub const POOL: &str = "LIO_StoragePool";
pub const HOSTED_POOL: &str = "LIO_HostedStoragePool";
pub const ALLOCATED_FROM_POOL: &str = "LIO_AllocatedFromStoragePool";
pub const JOB: &str = "LIO_ConcreteJob";
pub const AFFECTED_JOB_ELEMENT: &str = "LIO_AffectedJobElement";
pub const SYNCHRONIZED: &str = "LIO_StorageSynchronized";
pub const REGISTERED_PROFILE: &str = "LIO_RegisteredProfile";
pub const CONFORMS_TO_PROFILE: &str = "LIO_ElementConformsToProfile";

const KEY: u8 = 1;
const IN: u8 = 2;
const OUT: u8 = 4;
/// A required input: `IN` with the `Required` qualifier.
const REQ: u8 = 8 | IN;

/// A property or parameter: name, type (`string`, `uint16[]`, `ref:CLASS`), flags.
type P = (&'static str, &'static str, u8);

struct M {
    name: &'static str,
    params: &'static [P],
}

struct C {
    name: &'static str,
    superclass: Option<&'static str>,
    association: bool,
    props: &'static [P],
    methods: &'static [M],
}

const fn c(name: &'static str, superclass: &'static str, props: &'static [P]) -> C {
    C {
        name,
        superclass: if superclass.is_empty() {
            None
        } else {
            Some(superclass)
        },
        association: false,
        props,
        methods: &[],
    }
}

const fn assoc(name: &'static str, superclass: &'static str, props: &'static [P]) -> C {
    let mut x = c(name, superclass, props);
    x.association = true;
    x
}

const fn with_methods(mut x: C, methods: &'static [M]) -> C {
    x.methods = methods;
    x
}

const ATTACH_REPLICA: M = M {
    name: "AttachReplica",
    params: &[
        ("Job", "ref:CIM_ConcreteJob", OUT),
        ("SourceElement", "ref:CIM_ManagedElement", REQ),
        ("TargetElement", "ref:CIM_ManagedElement", REQ),
        ("CopyType", "uint16", REQ),
    ],
};
const MODIFY_SYNCHRONIZATION: M = M {
    name: "ModifySynchronization",
    params: &[
        ("Operation", "uint16", REQ),
        ("Job", "ref:CIM_ConcreteJob", OUT),
        ("Synchronization", "ref:CIM_StorageSynchronized", REQ),
    ],
};
/// This provider's versions also say why a call was refused, and ModifySynchronization takes
/// `Force` (go ahead although initiators are logged in to the source).
const LIO_ATTACH_REPLICA: M = M {
    name: "AttachReplica",
    params: &[
        ("Job", "ref:CIM_ConcreteJob", OUT),
        ("SourceElement", "ref:CIM_ManagedElement", REQ),
        ("TargetElement", "ref:CIM_ManagedElement", REQ),
        ("CopyType", "uint16", REQ),
        ("Description", "string", OUT),
    ],
};
const LIO_MODIFY_SYNCHRONIZATION: M = M {
    name: "ModifySynchronization",
    params: &[
        ("Operation", "uint16", REQ),
        ("Job", "ref:CIM_ConcreteJob", OUT),
        ("Synchronization", "ref:CIM_StorageSynchronized", REQ),
        ("Force", "boolean", IN),
        ("Description", "string", OUT),
    ],
};
const REQUEST_STATE_CHANGE: M = M {
    name: "RequestStateChange",
    params: &[
        ("RequestedState", "uint16", REQ),
        ("TimeoutPeriod", "datetime", IN),
    ],
};
const GET_ERROR: M = M {
    name: "GetError",
    params: &[("Error", "string", OUT)],
};
const GET_ERRORS: M = M {
    name: "GetErrors",
    params: &[("Errors", "string[]", OUT)],
};

/// Parents before children.
const CLASSES: &[C] = &[
    c(
        "CIM_ManagedElement",
        "",
        &[
            ("InstanceID", "string", 0),
            ("Caption", "string", 0),
            ("Description", "string", 0),
            ("ElementName", "string", 0),
        ],
    ),
    c(
        "CIM_ManagedSystemElement",
        "CIM_ManagedElement",
        &[
            ("Name", "string", 0),
            ("OperationalStatus", "uint16[]", 0),
            ("StatusDescriptions", "string[]", 0),
            ("HealthState", "uint16", 0),
        ],
    ),
    c("CIM_LogicalElement", "CIM_ManagedSystemElement", &[]),
    c(
        "CIM_EnabledLogicalElement",
        "CIM_LogicalElement",
        &[
            ("EnabledState", "uint16", 0),
            ("RequestedState", "uint16", 0),
        ],
    ),
    c(
        "CIM_System",
        "CIM_EnabledLogicalElement",
        &[
            ("CreationClassName", "string", KEY),
            ("Name", "string", KEY),
            ("NameFormat", "string", 0),
        ],
    ),
    c(
        "CIM_ComputerSystem",
        "CIM_System",
        &[
            ("Dedicated", "uint16[]", 0),
            ("OtherIdentifyingInfo", "string[]", 0),
            ("IdentifyingDescriptions", "string[]", 0),
        ],
    ),
    c(COMPUTER_SYSTEM, "CIM_ComputerSystem", &[]),
    c(
        "CIM_Service",
        "CIM_EnabledLogicalElement",
        &[
            ("SystemCreationClassName", "string", KEY),
            ("SystemName", "string", KEY),
            ("CreationClassName", "string", KEY),
            ("Name", "string", KEY),
        ],
    ),
    with_methods(
        c("CIM_StorageConfigurationService", "CIM_Service", &[]),
        &[ATTACH_REPLICA, MODIFY_SYNCHRONIZATION],
    ),
    with_methods(
        c(CONFIG_SERVICE, "CIM_StorageConfigurationService", &[]),
        &[LIO_ATTACH_REPLICA, LIO_MODIFY_SYNCHRONIZATION],
    ),
    c(
        "CIM_Capabilities",
        "CIM_ManagedElement",
        &[("InstanceID", "string", KEY)],
    ),
    c(
        "CIM_StorageConfigurationCapabilities",
        "CIM_Capabilities",
        &[
            ("SupportedAsynchronousActions", "uint16[]", 0),
            ("SupportedSynchronousActions", "uint16[]", 0),
            ("SupportedStorageElementTypes", "uint16[]", 0),
            ("SupportedCopyTypes", "uint16[]", 0),
        ],
    ),
    c(CAPABILITIES, "CIM_StorageConfigurationCapabilities", &[]),
    c(
        "CIM_LogicalDevice",
        "CIM_EnabledLogicalElement",
        &[
            ("SystemCreationClassName", "string", KEY),
            ("SystemName", "string", KEY),
            ("CreationClassName", "string", KEY),
            ("DeviceID", "string", KEY),
        ],
    ),
    c(
        "CIM_StorageExtent",
        "CIM_LogicalDevice",
        &[
            ("BlockSize", "uint64", 0),
            ("NumberOfBlocks", "uint64", 0),
            ("ConsumableBlocks", "uint64", 0),
            ("NameFormat", "uint16", 0),
            ("NameNamespace", "uint16", 0),
            ("Primordial", "boolean", 0),
        ],
    ),
    c("CIM_StorageVolume", "CIM_StorageExtent", &[]),
    c(
        VOLUME,
        "CIM_StorageVolume",
        &[
            ("Element", "string", 0),
            ("Plugin", "string", 0),
            ("Device", "string", 0),
            ("ReadOnly", "boolean", 0),
            ("ExportedBy", "string[]", 0),
            ("Adopted", "boolean", 0),
            ("Relationship", "string", 0),
        ],
    ),
    c(
        "CIM_ResourcePool",
        "CIM_LogicalElement",
        &[
            ("InstanceID", "string", KEY),
            ("PoolID", "string", 0),
            ("Primordial", "boolean", 0),
        ],
    ),
    c(
        "CIM_StoragePool",
        "CIM_ResourcePool",
        &[
            ("TotalManagedSpace", "uint64", 0),
            ("RemainingManagedSpace", "uint64", 0),
        ],
    ),
    c(POOL, "CIM_StoragePool", &[]),
    c(
        "CIM_Job",
        "CIM_LogicalElement",
        &[
            ("JobStatus", "string", 0),
            ("TimeSubmitted", "datetime", 0),
            ("StartTime", "datetime", 0),
            ("ElapsedTime", "datetime", 0),
            ("TimeBeforeRemoval", "datetime", 0),
            ("DeleteOnCompletion", "boolean", 0),
            ("PercentComplete", "uint16", 0),
            ("ErrorCode", "uint16", 0),
            ("ErrorDescription", "string", 0),
        ],
    ),
    with_methods(
        c(
            "CIM_ConcreteJob",
            "CIM_Job",
            &[("InstanceID", "string", KEY), ("JobState", "uint16", 0)],
        ),
        &[REQUEST_STATE_CHANGE, GET_ERROR, GET_ERRORS],
    ),
    with_methods(
        c(
            JOB,
            "CIM_ConcreteJob",
            &[
                ("SourceElement", "string", 0),
                ("TargetElement", "string", 0),
                ("CopyType", "uint16", 0),
                ("Relationship", "string", 0),
            ],
        ),
        &[REQUEST_STATE_CHANGE, GET_ERROR, GET_ERRORS],
    ),
    assoc(
        "CIM_Synchronized",
        "",
        &[
            ("SystemElement", "ref:CIM_ManagedElement", KEY),
            ("SyncedElement", "ref:CIM_ManagedElement", KEY),
            ("WhenSynced", "datetime", 0),
            ("SyncMaintained", "boolean", 0),
        ],
    ),
    assoc(
        "CIM_StorageSynchronized",
        "CIM_Synchronized",
        &[
            ("CopyType", "uint16", 0),
            ("SyncState", "uint16", 0),
            ("PercentSynced", "uint16", 0),
            ("SyncType", "uint16", 0),
            ("Mode", "uint16", 0),
        ],
    ),
    assoc(
        SYNCHRONIZED,
        "CIM_StorageSynchronized",
        &[
            ("InstanceID", "string", 0),
            ("StatusDescription", "string", 0),
            ("ChangeTracking", "boolean", 0),
            ("MaxLagWrites", "uint32", 0),
            ("CowUsedSectors", "uint64", 0),
            ("CowTotalSectors", "uint64", 0),
        ],
    ),
    assoc(
        "CIM_AffectedJobElement",
        "",
        &[
            ("AffectedElement", "ref:CIM_ManagedElement", KEY),
            ("AffectingElement", "ref:CIM_Job", KEY),
            ("ElementEffects", "uint16[]", 0),
        ],
    ),
    assoc(AFFECTED_JOB_ELEMENT, "CIM_AffectedJobElement", &[]),
    assoc(
        "CIM_ElementCapabilities",
        "",
        &[
            ("ManagedElement", "ref:CIM_ManagedElement", KEY),
            ("Capabilities", "ref:CIM_Capabilities", KEY),
        ],
    ),
    assoc(ELEMENT_CAPABILITIES, "CIM_ElementCapabilities", &[]),
    assoc(
        "CIM_Dependency",
        "",
        &[
            ("Antecedent", "ref:CIM_ManagedElement", KEY),
            ("Dependent", "ref:CIM_ManagedElement", KEY),
        ],
    ),
    assoc("CIM_HostedDependency", "CIM_Dependency", &[]),
    assoc(
        "CIM_HostedService",
        "CIM_HostedDependency",
        &[
            ("Antecedent", "ref:CIM_System", KEY),
            ("Dependent", "ref:CIM_Service", KEY),
        ],
    ),
    assoc(HOSTED_SERVICE, "CIM_HostedService", &[]),
    assoc(
        "CIM_AllocatedFromStoragePool",
        "CIM_Dependency",
        &[
            ("Antecedent", "ref:CIM_StoragePool", KEY),
            ("Dependent", "ref:CIM_LogicalElement", KEY),
            ("SpaceConsumed", "uint64", 0),
        ],
    ),
    assoc(ALLOCATED_FROM_POOL, "CIM_AllocatedFromStoragePool", &[]),
    assoc(
        "CIM_Component",
        "",
        &[
            ("GroupComponent", "ref:CIM_ManagedElement", KEY),
            ("PartComponent", "ref:CIM_ManagedElement", KEY),
        ],
    ),
    assoc("CIM_SystemComponent", "CIM_Component", &[]),
    assoc(
        "CIM_HostedStoragePool",
        "CIM_SystemComponent",
        &[
            ("GroupComponent", "ref:CIM_System", KEY),
            ("PartComponent", "ref:CIM_StoragePool", KEY),
        ],
    ),
    assoc(HOSTED_POOL, "CIM_HostedStoragePool", &[]),
    c(
        "CIM_RegisteredProfile",
        "CIM_ManagedElement",
        &[
            ("InstanceID", "string", KEY),
            ("RegisteredOrganization", "uint16", 0),
            ("OtherRegisteredOrganization", "string", 0),
            ("RegisteredName", "string", 0),
            ("RegisteredVersion", "string", 0),
            ("AdvertiseTypes", "uint16[]", 0),
        ],
    ),
    c(REGISTERED_PROFILE, "CIM_RegisteredProfile", &[]),
    assoc(
        "CIM_ElementConformsToProfile",
        "",
        &[
            ("ConformantStandard", "ref:CIM_RegisteredProfile", KEY),
            ("ManagedElement", "ref:CIM_ManagedElement", KEY),
        ],
    ),
    assoc(CONFORMS_TO_PROFILE, "CIM_ElementConformsToProfile", &[]),
];

/// A class with everything it inherits, and which of its members it declares itself.
#[derive(Debug)]
pub struct ClassInfo {
    /// Properties and methods inherited and own, with CLASSORIGIN and qualifiers.
    pub decl: ClassDecl,
    /// Names of the properties and methods this class declares or overrides.
    pub local: Vec<String>,
    /// The class itself, then its superclasses up to the root.
    pub lineage: Vec<String>,
}

impl ClassInfo {
    pub fn is_association(&self) -> bool {
        self.decl.qualifiers.iter().any(|q| q.name == "Association")
    }
    /// This class or one of its subclasses is `class` (names compared without case).
    pub fn is_a(&self, class: &str) -> bool {
        self.lineage.iter().any(|c| c.eq_ignore_ascii_case(class))
    }
    pub fn has_property(&self, name: &str) -> bool {
        self.decl
            .properties
            .iter()
            .any(|p| p.name.eq_ignore_ascii_case(name))
    }
    pub fn method(&self, name: &str) -> Option<&MethodDecl> {
        self.decl
            .methods
            .iter()
            .find(|m| m.name.eq_ignore_ascii_case(name))
    }
}

fn cim_type(t: &str) -> (CimType, bool, Option<String>) {
    if let Some(class) = t.strip_prefix("ref:") {
        return (CimType::Reference, false, Some(class.to_string()));
    }
    let (base, array) = match t.strip_suffix("[]") {
        Some(b) => (b, true),
        None => (t, false),
    };
    let ty = CimType::parse(base).unwrap_or_else(|| panic!("unknown type {t} in the class table"));
    (ty, array, None)
}

fn build() -> Vec<ClassInfo> {
    let mut out: Vec<ClassInfo> = Vec::new();
    for spec in CLASSES {
        let parent = spec.superclass.map(|s| {
            out.iter()
                .find(|c| c.decl.name == s)
                .unwrap_or_else(|| panic!("{s} must come before {}", spec.name))
        });
        let mut properties = parent.map_or_else(Vec::new, |p| p.decl.properties.clone());
        let mut methods = parent.map_or_else(Vec::new, |p| p.decl.methods.clone());
        let mut lineage = vec![spec.name.to_string()];
        lineage.extend(parent.map_or_else(Vec::new, |p| p.lineage.clone()));
        let mut local = Vec::new();
        for &(name, ty, flags) in spec.props {
            let (ty, array, reference_class) = cim_type(ty);
            let mut qualifiers = Vec::new();
            if flags & KEY != 0 {
                qualifiers.push(Qualifier::flag("Key"));
            }
            let origin = properties
                .iter()
                .position(|p: &PropertyDecl| p.name == name)
                .map(|i| properties.remove(i).class_origin)
                .unwrap_or_else(|| spec.name.to_string());
            properties.push(PropertyDecl {
                name: name.to_string(),
                ty,
                array,
                reference_class,
                class_origin: origin,
                qualifiers,
            });
            local.push(name.to_string());
        }
        for m in spec.methods {
            let origin = methods
                .iter()
                .position(|x: &MethodDecl| x.name == m.name)
                .map(|i| methods.remove(i).class_origin)
                .unwrap_or_else(|| spec.name.to_string());
            let parameters = m
                .params
                .iter()
                .map(|&(name, ty, flags)| {
                    let (ty, array, reference_class) = cim_type(ty);
                    let mut qualifiers = Vec::new();
                    if flags & IN != 0 {
                        qualifiers.push(Qualifier::flag("In"));
                    }
                    if flags & OUT != 0 {
                        qualifiers.push(Qualifier::flag("Out"));
                    }
                    if flags & REQ == REQ {
                        qualifiers.push(Qualifier::flag("Required"));
                    }
                    ParameterDecl {
                        name: name.to_string(),
                        ty,
                        array,
                        reference_class,
                        qualifiers,
                    }
                })
                .collect();
            methods.push(MethodDecl {
                name: m.name.to_string(),
                return_type: CimType::Uint32,
                class_origin: origin,
                qualifiers: vec![],
                parameters,
            });
            local.push(m.name.to_string());
        }
        let mut qualifiers = Vec::new();
        if spec.association {
            qualifiers.push(Qualifier::flag("Association"));
        }
        out.push(ClassInfo {
            decl: ClassDecl {
                name: spec.name.to_string(),
                superclass: spec.superclass.map(str::to_string),
                qualifiers,
                properties,
                methods,
            },
            local,
            lineage,
        });
    }
    out
}

/// Every class, parents before children.
pub fn all() -> &'static [ClassInfo] {
    static ALL: OnceLock<Vec<ClassInfo>> = OnceLock::new();
    ALL.get_or_init(build)
}

/// The class named `name` (without regard to case).
pub fn find(name: &str) -> Option<&'static ClassInfo> {
    all()
        .iter()
        .find(|c| c.decl.name.eq_ignore_ascii_case(name))
}

/// The classes this provider has instances of (the `LIO_` ones).
pub fn concrete() -> impl Iterator<Item = &'static ClassInfo> {
    all().iter().filter(|c| c.decl.name.starts_with(PREFIX))
}

/// `class` as GetClass returns it, given the request's flags.
pub fn shaped(
    info: &ClassInfo,
    local_only: bool,
    include_qualifiers: bool,
    include_class_origin: bool,
    property_list: Option<&[String]>,
) -> ClassDecl {
    let mut d = info.decl.clone();
    let is_local = |n: &str| info.local.iter().any(|l| l == n);
    if local_only {
        d.properties.retain(|p| is_local(&p.name));
        d.methods.retain(|m| is_local(&m.name));
    }
    if let Some(list) = property_list {
        d.properties
            .retain(|p| list.iter().any(|n| n.eq_ignore_ascii_case(&p.name)));
    }
    if !include_qualifiers {
        d.qualifiers.clear();
        for p in &mut d.properties {
            p.qualifiers.clear();
        }
        for m in &mut d.methods {
            m.qualifiers.clear();
            for p in &mut m.parameters {
                p.qualifiers.clear();
            }
        }
    }
    if !include_class_origin {
        for p in &mut d.properties {
            p.class_origin.clear();
        }
        for m in &mut d.methods {
            m.class_origin.clear();
        }
    }
    d
}
