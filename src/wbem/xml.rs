//! The CIM-XML codec (DSP0201) for CIM operations over HTTP (DSP0200): requests and responses
//! parsed into plain types and written back. It knows nothing of the classes served.
//!
//! Hostile input is expected: the document is read into a small tree first, with its depth
//! and element count capped, document type declarations refused (so no entity is ever
//! defined, let alone expanded) and only the five predefined entities and character
//! references accepted. The tree is then read as CIM-XML; anything unknown where the DTD
//! allows only certain elements is an error rather than ignored.

use quick_xml::escape::{escape, resolve_predefined_entity};
use quick_xml::events::Event;
use std::fmt::Write as _;

/// The deepest element nesting accepted. CIM-XML needs about 12 (a reference key in an
/// instance path in a parameter); more is an attack or a bug.
pub const MAX_DEPTH: usize = 32;
/// The most elements one request may hold.
pub const MAX_ELEMENTS: usize = 200_000;
/// The most elements a response may hold, for clients (an enumeration of many instances).
pub const MAX_RESPONSE_ELEMENTS: usize = 50_000_000;

/// Why a document was refused, in DSP0200's terms (the `CIMError` header values).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    /// Not well-formed XML, or XML this codec refuses to read (a DTD, an unknown entity,
    /// too deep, too many elements).
    #[error("request-not-well-formed: {0}")]
    NotWellFormed(String),
    /// Well-formed XML that is not valid CIM-XML.
    #[error("request-not-valid: {0}")]
    NotValid(String),
    /// A MULTIREQ: this server takes one operation per request.
    #[error("multiple-requests-unsupported: send one operation per request")]
    MultipleRequests,
}

impl XmlError {
    /// The value for DSP0200's `CIMError` header.
    pub fn header_value(&self) -> &'static str {
        match self {
            XmlError::NotWellFormed(_) => "request-not-well-formed",
            XmlError::NotValid(_) => "request-not-valid",
            XmlError::MultipleRequests => "multiple-requests-unsupported",
        }
    }
}

type Result<T> = std::result::Result<T, XmlError>;

fn invalid(what: impl Into<String>) -> XmlError {
    XmlError::NotValid(what.into())
}

// ---------------------------------------------------------------------------------------------
// The model

/// A CIM data type, as named in `TYPE` and `PARAMTYPE` attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CimType {
    Boolean,
    String,
    Char16,
    Uint8,
    Sint8,
    Uint16,
    Sint16,
    Uint32,
    Sint32,
    Uint64,
    Sint64,
    Real32,
    Real64,
    Datetime,
    Reference,
}

impl CimType {
    const ALL: [(CimType, &'static str); 15] = [
        (CimType::Boolean, "boolean"),
        (CimType::String, "string"),
        (CimType::Char16, "char16"),
        (CimType::Uint8, "uint8"),
        (CimType::Sint8, "sint8"),
        (CimType::Uint16, "uint16"),
        (CimType::Sint16, "sint16"),
        (CimType::Uint32, "uint32"),
        (CimType::Sint32, "sint32"),
        (CimType::Uint64, "uint64"),
        (CimType::Sint64, "sint64"),
        (CimType::Real32, "real32"),
        (CimType::Real64, "real64"),
        (CimType::Datetime, "datetime"),
        (CimType::Reference, "reference"),
    ];
    pub fn name(self) -> &'static str {
        Self::ALL
            .iter()
            .find(|(t, _)| *t == self)
            .map_or("string", |(_, n)| n)
    }
    pub fn parse(s: &str) -> Option<CimType> {
        Self::ALL.iter().find(|(_, n)| *n == s).map(|(t, _)| *t)
    }
}

/// The value of a key binding.
#[derive(Debug, Clone, PartialEq)]
pub enum KeyValue {
    String(String),
    /// A number in its text form.
    Numeric(String),
    Boolean(bool),
    Reference(Box<ObjectPath>),
}

impl KeyValue {
    pub fn as_str(&self) -> Option<&str> {
        match self {
            KeyValue::String(s) | KeyValue::Numeric(s) => Some(s),
            _ => None,
        }
    }
}

/// An instance path (keys given) or a class path (no keys). Host and namespace are optional,
/// as in DSP0201's INSTANCENAME, LOCALINSTANCEPATH and INSTANCEPATH.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ObjectPath {
    pub host: Option<String>,
    pub namespace: Option<String>,
    pub class: String,
    pub keys: Vec<(String, KeyValue)>,
}

impl ObjectPath {
    pub fn new(class: &str) -> ObjectPath {
        ObjectPath {
            class: class.to_string(),
            ..Default::default()
        }
    }
    pub fn with_key(mut self, name: &str, value: KeyValue) -> ObjectPath {
        self.keys.push((name.to_string(), value));
        self
    }
    pub fn with_string_key(self, name: &str, value: &str) -> ObjectPath {
        self.with_key(name, KeyValue::String(value.to_string()))
    }
    pub fn in_namespace(mut self, host: Option<&str>, namespace: &str) -> ObjectPath {
        self.host = host.map(str::to_string);
        self.namespace = Some(namespace.to_string());
        self
    }
    /// The key named `name` (key names are case-insensitive in CIM).
    pub fn key(&self, name: &str) -> Option<&KeyValue> {
        self.keys
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v)
    }
    /// The same instance: the same class and the same keys, names compared without case,
    /// whatever host or namespace either names. References in keys compare the same way.
    pub fn same_instance(&self, other: &ObjectPath) -> bool {
        self.class.eq_ignore_ascii_case(&other.class)
            && self.keys.len() == other.keys.len()
            && self.keys.iter().all(|(n, v)| {
                other.key(n).is_some_and(|w| match (v, w) {
                    (KeyValue::Reference(a), KeyValue::Reference(b)) => a.same_instance(b),
                    (KeyValue::Boolean(a), KeyValue::Boolean(b)) => a == b,
                    (a, b) => a.as_str().is_some() && a.as_str() == b.as_str(),
                })
            })
    }
}

/// A property or parameter value, in CIM-XML's text form (the type travels beside it).
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Scalar(String),
    Array(Vec<String>),
    Reference(ObjectPath),
    ReferenceArray(Vec<ObjectPath>),
}

/// A property of an instance. `value: None` is NULL.
#[derive(Debug, Clone, PartialEq)]
pub struct Property {
    pub name: String,
    pub ty: CimType,
    pub array: bool,
    /// For references: the class referred to.
    pub reference_class: Option<String>,
    pub value: Option<Value>,
}

impl Property {
    fn scalar(name: &str, ty: CimType, v: Option<String>) -> Property {
        Property {
            name: name.to_string(),
            ty,
            array: false,
            reference_class: None,
            value: v.map(Value::Scalar),
        }
    }
    pub fn string(name: &str, v: impl Into<String>) -> Property {
        Property::scalar(name, CimType::String, Some(v.into()))
    }
    pub fn opt_string(name: &str, v: Option<impl Into<String>>) -> Property {
        Property::scalar(name, CimType::String, v.map(Into::into))
    }
    pub fn boolean(name: &str, v: bool) -> Property {
        Property::scalar(name, CimType::Boolean, Some(bool_text(v).to_string()))
    }
    pub fn number(name: &str, ty: CimType, v: impl ToString) -> Property {
        Property::scalar(name, ty, Some(v.to_string()))
    }
    pub fn opt_number(name: &str, ty: CimType, v: Option<impl ToString>) -> Property {
        Property::scalar(name, ty, v.map(|v| v.to_string()))
    }
    /// A datetime (DSP0004 text form: `yyyymmddhhmmss.mmmmmmsutc` or an interval).
    pub fn datetime(name: &str, v: Option<String>) -> Property {
        Property::scalar(name, CimType::Datetime, v)
    }
    pub fn array(name: &str, ty: CimType, v: Vec<String>) -> Property {
        Property {
            name: name.to_string(),
            ty,
            array: true,
            reference_class: None,
            value: Some(Value::Array(v)),
        }
    }
    pub fn reference(name: &str, class: &str, path: ObjectPath) -> Property {
        Property {
            name: name.to_string(),
            ty: CimType::Reference,
            array: false,
            reference_class: Some(class.to_string()),
            value: Some(Value::Reference(path)),
        }
    }
}

/// An instance: its class and properties.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Instance {
    pub class: String,
    pub properties: Vec<Property>,
}

impl Instance {
    pub fn property(&self, name: &str) -> Option<&Property> {
        self.properties
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
    }
}

/// A qualifier on a class, property, method or parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct Qualifier {
    pub name: String,
    pub ty: CimType,
    pub value: Value,
}

impl Qualifier {
    pub fn flag(name: &str) -> Qualifier {
        Qualifier {
            name: name.to_string(),
            ty: CimType::Boolean,
            value: Value::Scalar("TRUE".into()),
        }
    }
    pub fn text(name: &str, v: &str) -> Qualifier {
        Qualifier {
            name: name.to_string(),
            ty: CimType::String,
            value: Value::Scalar(v.to_string()),
        }
    }
    pub fn texts(name: &str, v: &[&str]) -> Qualifier {
        Qualifier {
            name: name.to_string(),
            ty: CimType::String,
            value: Value::Array(v.iter().map(|s| s.to_string()).collect()),
        }
    }
}

/// A property declared by a class.
#[derive(Debug, Clone, PartialEq)]
pub struct PropertyDecl {
    pub name: String,
    pub ty: CimType,
    pub array: bool,
    pub reference_class: Option<String>,
    /// The class that introduced it.
    pub class_origin: String,
    pub qualifiers: Vec<Qualifier>,
}

/// A method parameter.
#[derive(Debug, Clone, PartialEq)]
pub struct ParameterDecl {
    pub name: String,
    pub ty: CimType,
    pub array: bool,
    pub reference_class: Option<String>,
    pub qualifiers: Vec<Qualifier>,
}

/// A method declared by a class.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodDecl {
    pub name: String,
    pub return_type: CimType,
    pub class_origin: String,
    pub qualifiers: Vec<Qualifier>,
    pub parameters: Vec<ParameterDecl>,
}

/// A class as GetClass returns it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClassDecl {
    pub name: String,
    pub superclass: Option<String>,
    pub qualifiers: Vec<Qualifier>,
    pub properties: Vec<PropertyDecl>,
    pub methods: Vec<MethodDecl>,
}

/// A parameter of a request (IPARAMVALUE or PARAMVALUE) or an output parameter.
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    /// Present without a value.
    Null,
    Value(Value),
    ClassName(String),
    InstanceName(ObjectPath),
    /// A string holding an instance (`EmbeddedObject="instance"`), or NULL.
    EmbeddedInstance(Option<Instance>),
    /// An array of such strings.
    EmbeddedInstances(Vec<Instance>),
    /// An element this codec does not read (a CLASS or INSTANCE given to an operation that
    /// is not offered); its name.
    Unsupported(String),
}

/// One request parameter: name, declared type (PARAMVALUE's PARAMTYPE, if given) and value.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    pub name: String,
    pub ty: Option<CimType>,
    pub value: ParamValue,
}

/// What a request asks.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// An intrinsic operation (IMETHODCALL) on a namespace.
    Intrinsic { name: String, namespace: String },
    /// An extrinsic method (METHODCALL) on an instance or a class; `target.namespace` is
    /// always set.
    Extrinsic { name: String, target: ObjectPath },
}

impl Call {
    pub fn name(&self) -> &str {
        match self {
            Call::Intrinsic { name, .. } | Call::Extrinsic { name, .. } => name,
        }
    }
}

/// A CIM operation request (one SIMPLEREQ).
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub message_id: String,
    pub call: Call,
    pub params: Vec<Param>,
}

impl Request {
    pub fn param(&self, name: &str) -> Option<&Param> {
        self.params
            .iter()
            .find(|p| p.name.eq_ignore_ascii_case(name))
    }
}

/// A CIM status code and description (DSP0200's ERROR element).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("CIM error {code}: {description}")]
pub struct CimError {
    pub code: u16,
    pub description: String,
}

/// The DSP0200 status codes this server returns.
pub mod status {
    pub const FAILED: u16 = 1;
    pub const ACCESS_DENIED: u16 = 2;
    pub const INVALID_NAMESPACE: u16 = 3;
    pub const INVALID_PARAMETER: u16 = 4;
    pub const INVALID_CLASS: u16 = 5;
    pub const NOT_FOUND: u16 = 6;
    pub const NOT_SUPPORTED: u16 = 7;
    pub const METHOD_NOT_AVAILABLE: u16 = 16;
    pub const METHOD_NOT_FOUND: u16 = 17;
}

impl CimError {
    pub fn new(code: u16, description: impl Into<String>) -> CimError {
        CimError {
            code,
            description: description.into(),
        }
    }
}

/// What an intrinsic operation returns (the content of IRETURNVALUE).
#[derive(Debug, Clone, PartialEq)]
pub enum IReturn {
    Nothing,
    ClassNames(Vec<String>),
    Class(ClassDecl),
    Classes(Vec<ClassDecl>),
    Instance(Instance),
    InstanceNames(Vec<ObjectPath>),
    NamedInstances(Vec<(ObjectPath, Instance)>),
    /// Associators and References: full paths with their instances.
    ObjectsWithPath(Vec<(ObjectPath, Instance)>),
    /// AssociatorNames and ReferenceNames.
    ObjectPaths(Vec<ObjectPath>),
}

/// What an extrinsic method returns.
#[derive(Debug, Clone, PartialEq)]
pub struct MethodReturn {
    pub return_type: CimType,
    pub return_value: String,
    pub out: Vec<Param>,
}

/// A CIM operation response (one SIMPLERSP).
#[derive(Debug, Clone, PartialEq)]
pub enum Response {
    Intrinsic {
        name: String,
        result: std::result::Result<IReturn, CimError>,
    },
    Extrinsic {
        name: String,
        result: std::result::Result<MethodReturn, CimError>,
    },
}

// ---------------------------------------------------------------------------------------------
// The tree read from a document

#[derive(Debug, Default)]
struct Node {
    name: String,
    attrs: Vec<(String, String)>,
    children: Vec<Node>,
    text: String,
}

impl Node {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
    fn req_attr(&self, name: &str) -> Result<&str> {
        self.attr(name)
            .ok_or_else(|| invalid(format!("{} without {name}", self.name)))
    }
    fn child(&self, name: &str) -> Option<&Node> {
        self.children.iter().find(|c| c.name == name)
    }
    fn req_child(&self, name: &str) -> Result<&Node> {
        self.child(name)
            .ok_or_else(|| invalid(format!("{} without {name}", self.name)))
    }
    fn only_child(&self) -> Result<&Node> {
        match self.children.as_slice() {
            [c] => Ok(c),
            _ => Err(invalid(format!("{} must hold one element", self.name))),
        }
    }
    fn expect(&self, name: &str) -> Result<&Node> {
        if self.name == name {
            Ok(self)
        } else {
            Err(invalid(format!("expected {name}, found {}", self.name)))
        }
    }
}

fn well(e: impl std::fmt::Display) -> XmlError {
    XmlError::NotWellFormed(e.to_string())
}

/// Reads `input` into a tree, with the limits described at the top of the module and at
/// most `max_elements` elements.
fn parse_tree(input: &str, max_elements: usize) -> Result<Node> {
    let mut reader = quick_xml::Reader::from_str(input);
    let cfg = reader.config_mut();
    cfg.expand_empty_elements = true;
    cfg.check_end_names = true;
    let mut stack: Vec<Node> = Vec::new();
    let mut root: Option<Node> = None;
    let mut elements = 0usize;
    loop {
        let ev = reader.read_event().map_err(well)?;
        match ev {
            Event::Start(s) => {
                if root.is_some() {
                    return Err(well("content after the document element"));
                }
                elements += 1;
                if stack.len() >= MAX_DEPTH {
                    return Err(well(format!("nested deeper than {MAX_DEPTH} elements")));
                }
                if elements > max_elements {
                    return Err(well(format!("more than {max_elements} elements")));
                }
                let name = std::str::from_utf8(s.name().as_ref())
                    .map_err(well)?
                    .to_string();
                let mut attrs = Vec::new();
                for a in s.attributes() {
                    let a = a.map_err(well)?;
                    let k = std::str::from_utf8(a.key.as_ref())
                        .map_err(well)?
                        .to_string();
                    let v = a.unescape_value().map_err(well)?.into_owned();
                    attrs.push((k, v));
                }
                stack.push(Node {
                    name,
                    attrs,
                    ..Default::default()
                });
            }
            Event::End(_) => {
                let node = stack.pop().ok_or_else(|| well("unbalanced end tag"))?;
                match stack.last_mut() {
                    Some(parent) => parent.children.push(node),
                    None => root = Some(node),
                }
            }
            Event::Text(t) => {
                let text = t.decode().map_err(well)?;
                match stack.last_mut() {
                    Some(n) => n.text.push_str(&text),
                    None if text.trim().is_empty() => {}
                    None => return Err(well("text outside the document element")),
                }
            }
            Event::CData(c) => {
                let text = c.decode().map_err(well)?;
                match stack.last_mut() {
                    Some(n) => n.text.push_str(&text),
                    None => return Err(well("CDATA outside the document element")),
                }
            }
            Event::GeneralRef(r) => {
                let n = stack
                    .last_mut()
                    .ok_or_else(|| well("a reference outside the document element"))?;
                if let Some(c) = r.resolve_char_ref().map_err(well)? {
                    n.text.push(c);
                } else {
                    let name = r.decode().map_err(well)?;
                    let v = resolve_predefined_entity(&name)
                        .ok_or_else(|| well(format!("entity &{name}; is not defined")))?;
                    n.text.push_str(v);
                }
            }
            Event::DocType(_) => {
                return Err(well("document type declarations are not accepted"));
            }
            Event::Decl(_) | Event::PI(_) | Event::Comment(_) => {}
            Event::Empty(_) => unreachable!("expand_empty_elements is set"),
            Event::Eof => break,
        }
    }
    if !stack.is_empty() {
        return Err(well("the document ends inside an element"));
    }
    root.ok_or_else(|| well("no document element"))
}

// ---------------------------------------------------------------------------------------------
// Reading CIM-XML

fn parse_bool(s: &str) -> Result<bool> {
    match s.trim() {
        t if t.eq_ignore_ascii_case("true") => Ok(true),
        t if t.eq_ignore_ascii_case("false") => Ok(false),
        t => Err(invalid(format!("{t:?} is not a boolean"))),
    }
}

fn bool_text(b: bool) -> &'static str {
    if b {
        "TRUE"
    } else {
        "FALSE"
    }
}

fn local_namespace(n: &Node) -> Result<String> {
    n.expect("LOCALNAMESPACEPATH")?;
    let parts: Vec<&str> = n
        .children
        .iter()
        .map(|c| c.expect("NAMESPACE").and_then(|c| c.req_attr("NAME")))
        .collect::<Result<_>>()?;
    if parts.is_empty() {
        return Err(invalid("LOCALNAMESPACEPATH without NAMESPACE"));
    }
    Ok(parts.join("/"))
}

fn namespace_path(n: &Node) -> Result<(String, String)> {
    n.expect("NAMESPACEPATH")?;
    let host = n.req_child("HOST")?.text.trim().to_string();
    Ok((host, local_namespace(n.req_child("LOCALNAMESPACEPATH")?)?))
}

fn key_value(n: &Node) -> Result<KeyValue> {
    n.expect("KEYVALUE")?;
    Ok(match n.attr("VALUETYPE").unwrap_or("string") {
        "string" => KeyValue::String(n.text.clone()),
        "boolean" => KeyValue::Boolean(parse_bool(&n.text)?),
        "numeric" => KeyValue::Numeric(n.text.trim().to_string()),
        v => return Err(invalid(format!("unknown VALUETYPE {v:?}"))),
    })
}

fn instance_name(n: &Node) -> Result<ObjectPath> {
    n.expect("INSTANCENAME")?;
    let mut p = ObjectPath::new(n.req_attr("CLASSNAME")?);
    for c in &n.children {
        match c.name.as_str() {
            "KEYBINDING" => {
                let v = match c.only_child()? {
                    k if k.name == "KEYVALUE" => key_value(k)?,
                    r if r.name == "VALUE.REFERENCE" => {
                        KeyValue::Reference(Box::new(value_reference(r)?))
                    }
                    o => return Err(invalid(format!("{} in KEYBINDING", o.name))),
                };
                p.keys.push((c.req_attr("NAME")?.to_string(), v));
            }
            // a single key given without its name
            "KEYVALUE" => p.keys.push((String::new(), key_value(c)?)),
            o => return Err(invalid(format!("{o} in INSTANCENAME"))),
        }
    }
    Ok(p)
}

/// Any of the paths DSP0201 allows where a reference or an object name goes.
fn object_path(n: &Node) -> Result<ObjectPath> {
    match n.name.as_str() {
        "INSTANCENAME" => instance_name(n),
        "CLASSNAME" => Ok(ObjectPath::new(n.req_attr("NAME")?)),
        "LOCALINSTANCEPATH" => {
            let mut p = instance_name(n.req_child("INSTANCENAME")?)?;
            p.namespace = Some(local_namespace(n.req_child("LOCALNAMESPACEPATH")?)?);
            Ok(p)
        }
        "LOCALCLASSPATH" => {
            let mut p = ObjectPath::new(n.req_child("CLASSNAME")?.req_attr("NAME")?);
            p.namespace = Some(local_namespace(n.req_child("LOCALNAMESPACEPATH")?)?);
            Ok(p)
        }
        "INSTANCEPATH" => {
            let (host, ns) = namespace_path(n.req_child("NAMESPACEPATH")?)?;
            let p = instance_name(n.req_child("INSTANCENAME")?)?;
            Ok(p.in_namespace(Some(&host), &ns))
        }
        "CLASSPATH" => {
            let (host, ns) = namespace_path(n.req_child("NAMESPACEPATH")?)?;
            let p = ObjectPath::new(n.req_child("CLASSNAME")?.req_attr("NAME")?);
            Ok(p.in_namespace(Some(&host), &ns))
        }
        o => Err(invalid(format!("{o} is not an object path"))),
    }
}

fn value_reference(n: &Node) -> Result<ObjectPath> {
    n.expect("VALUE.REFERENCE")?;
    object_path(n.only_child()?)
}

/// A VALUE, VALUE.ARRAY, VALUE.REFERENCE or VALUE.REFARRAY.
fn value(n: &Node) -> Result<Value> {
    Ok(match n.name.as_str() {
        "VALUE" => Value::Scalar(n.text.clone()),
        "VALUE.ARRAY" => Value::Array(
            n.children
                .iter()
                .map(|c| c.expect("VALUE").map(|c| c.text.clone()))
                .collect::<Result<_>>()?,
        ),
        "VALUE.REFERENCE" => Value::Reference(value_reference(n)?),
        "VALUE.REFARRAY" => Value::ReferenceArray(
            n.children
                .iter()
                .map(value_reference)
                .collect::<Result<_>>()?,
        ),
        o => return Err(invalid(format!("{o} is not a value"))),
    })
}

fn param_value(n: &Node) -> Result<ParamValue> {
    let Some(c) = n.children.first() else {
        return Ok(ParamValue::Null);
    };
    if n.children.len() > 1 {
        return Err(invalid(format!("{} holds more than one value", n.name)));
    }
    Ok(match c.name.as_str() {
        "VALUE" | "VALUE.ARRAY" | "VALUE.REFERENCE" | "VALUE.REFARRAY" => {
            ParamValue::Value(value(c)?)
        }
        "CLASSNAME" => ParamValue::ClassName(c.req_attr("NAME")?.to_string()),
        "INSTANCENAME" => ParamValue::InstanceName(instance_name(c)?),
        "CLASS" | "INSTANCE" | "VALUE.NAMEDINSTANCE" | "QUALIFIER.DECLARATION" => {
            ParamValue::Unsupported(c.name.clone())
        }
        o => return Err(invalid(format!("{o} in {}", n.name))),
    })
}

fn param(n: &Node) -> Result<Param> {
    let ty = match n.attr("PARAMTYPE").or(n.attr("TYPE")) {
        Some(t) => Some(CimType::parse(t).ok_or_else(|| invalid(format!("unknown type {t:?}")))?),
        None => None,
    };
    let embedded = n
        .attr("EmbeddedObject")
        .or(n.attr("EMBEDDEDOBJECT"))
        .is_some_and(|e| e == "instance");
    let value = match param_value(n)? {
        ParamValue::Value(Value::Scalar(s)) if embedded => {
            ParamValue::EmbeddedInstance(Some(parse_embedded(&s)?))
        }
        ParamValue::Null if embedded => ParamValue::EmbeddedInstance(None),
        ParamValue::Value(Value::Array(a)) if embedded => ParamValue::EmbeddedInstances(
            a.iter().map(|s| parse_embedded(s)).collect::<Result<_>>()?,
        ),
        v => v,
    };
    Ok(Param {
        name: n.req_attr("NAME")?.to_string(),
        ty,
        value,
    })
}

/// An instance carried as a string (an embedded instance), with the same limits as a document.
fn parse_embedded(s: &str) -> Result<Instance> {
    instance(&parse_tree(s, MAX_ELEMENTS)?)
}

/// `i` as the string value of an embedded instance.
pub fn embedded_instance(i: &Instance) -> String {
    let mut w = W(String::new());
    w.instance(i);
    w.0
}

fn message(root: &Node) -> Result<&Node> {
    root.expect("CIM")?;
    let m = root.req_child("MESSAGE")?;
    m.req_attr("ID")?;
    Ok(m)
}

/// Parses a CIM operation request (a MESSAGE holding one SIMPLEREQ).
pub fn parse_request(input: &str) -> Result<Request> {
    let root = parse_tree(input, MAX_ELEMENTS)?;
    let m = message(&root)?;
    if m.child("MULTIREQ").is_some() {
        return Err(XmlError::MultipleRequests);
    }
    let req = m.req_child("SIMPLEREQ")?;
    let call = req.only_child()?;
    let (call_kind, params) = match call.name.as_str() {
        "IMETHODCALL" => {
            let ns = local_namespace(call.req_child("LOCALNAMESPACEPATH")?)?;
            let params = call
                .children
                .iter()
                .filter(|c| c.name == "IPARAMVALUE")
                .map(param)
                .collect::<Result<_>>()?;
            (
                Call::Intrinsic {
                    name: call.req_attr("NAME")?.to_string(),
                    namespace: ns,
                },
                params,
            )
        }
        "METHODCALL" => {
            let target = match (
                call.child("LOCALINSTANCEPATH"),
                call.child("LOCALCLASSPATH"),
            ) {
                (Some(p), None) | (None, Some(p)) => object_path(p)?,
                _ => {
                    return Err(invalid(
                        "METHODCALL needs one LOCALINSTANCEPATH or LOCALCLASSPATH",
                    ))
                }
            };
            let params = call
                .children
                .iter()
                .filter(|c| c.name == "PARAMVALUE")
                .map(param)
                .collect::<Result<_>>()?;
            (
                Call::Extrinsic {
                    name: call.req_attr("NAME")?.to_string(),
                    target,
                },
                params,
            )
        }
        o => return Err(invalid(format!("{o} in SIMPLEREQ"))),
    };
    Ok(Request {
        message_id: m.req_attr("ID")?.to_string(),
        call: call_kind,
        params,
    })
}

fn qualifier(n: &Node) -> Result<Qualifier> {
    n.expect("QUALIFIER")?;
    let ty = n.req_attr("TYPE")?;
    Ok(Qualifier {
        name: n.req_attr("NAME")?.to_string(),
        ty: CimType::parse(ty).ok_or_else(|| invalid(format!("unknown type {ty:?}")))?,
        value: value(n.only_child()?)?,
    })
}

fn property(n: &Node) -> Result<Property> {
    let ty = |n: &Node| {
        let t = n.req_attr("TYPE")?;
        CimType::parse(t).ok_or_else(|| invalid(format!("unknown type {t:?}")))
    };
    let val = n
        .children
        .iter()
        .find(|c| c.name != "QUALIFIER")
        .map(value)
        .transpose()?;
    let (ty, array, reference_class) = match n.name.as_str() {
        "PROPERTY" => (ty(n)?, false, None),
        "PROPERTY.ARRAY" => (ty(n)?, true, None),
        "PROPERTY.REFERENCE" => (
            CimType::Reference,
            false,
            n.attr("REFERENCECLASS").map(str::to_string),
        ),
        o => return Err(invalid(format!("{o} is not a property"))),
    };
    Ok(Property {
        name: n.req_attr("NAME")?.to_string(),
        ty,
        array,
        reference_class,
        value: val,
    })
}

fn instance(n: &Node) -> Result<Instance> {
    n.expect("INSTANCE")?;
    Ok(Instance {
        class: n.req_attr("CLASSNAME")?.to_string(),
        properties: n
            .children
            .iter()
            .filter(|c| c.name != "QUALIFIER")
            .map(property)
            .collect::<Result<_>>()?,
    })
}

fn qualifiers(n: &Node) -> Result<Vec<Qualifier>> {
    n.children
        .iter()
        .filter(|c| c.name == "QUALIFIER")
        .map(qualifier)
        .collect()
}

fn class_decl(n: &Node) -> Result<ClassDecl> {
    n.expect("CLASS")?;
    let name = n.req_attr("NAME")?.to_string();
    let mut properties = Vec::new();
    let mut methods = Vec::new();
    for c in &n.children {
        match c.name.as_str() {
            "PROPERTY" | "PROPERTY.ARRAY" | "PROPERTY.REFERENCE" => {
                let p = property(c)?;
                properties.push(PropertyDecl {
                    name: p.name,
                    ty: p.ty,
                    array: p.array,
                    reference_class: p.reference_class,
                    class_origin: c.attr("CLASSORIGIN").unwrap_or(&name).to_string(),
                    qualifiers: qualifiers(c)?,
                });
            }
            "METHOD" => {
                let rt = c.req_attr("TYPE")?;
                let mut parameters = Vec::new();
                for p in c.children.iter().filter(|p| p.name != "QUALIFIER") {
                    let (ty, array) = match p.name.as_str() {
                        "PARAMETER" => (p.req_attr("TYPE")?, false),
                        "PARAMETER.ARRAY" => (p.req_attr("TYPE")?, true),
                        "PARAMETER.REFERENCE" => ("reference", false),
                        "PARAMETER.REFARRAY" => ("reference", true),
                        o => return Err(invalid(format!("{o} in METHOD"))),
                    };
                    parameters.push(ParameterDecl {
                        name: p.req_attr("NAME")?.to_string(),
                        ty: CimType::parse(ty)
                            .ok_or_else(|| invalid(format!("unknown type {ty:?}")))?,
                        array,
                        reference_class: p.attr("REFERENCECLASS").map(str::to_string),
                        qualifiers: qualifiers(p)?,
                    });
                }
                methods.push(MethodDecl {
                    name: c.req_attr("NAME")?.to_string(),
                    return_type: CimType::parse(rt)
                        .ok_or_else(|| invalid(format!("unknown type {rt:?}")))?,
                    class_origin: c.attr("CLASSORIGIN").unwrap_or(&name).to_string(),
                    qualifiers: qualifiers(c)?,
                    parameters,
                });
            }
            "QUALIFIER" => {}
            o => return Err(invalid(format!("{o} in CLASS"))),
        }
    }
    Ok(ClassDecl {
        superclass: n.attr("SUPERCLASS").map(str::to_string),
        qualifiers: qualifiers(n)?,
        name,
        properties,
        methods,
    })
}

fn path_and_instance(n: &Node, path_elem: &str) -> Result<(ObjectPath, Instance)> {
    Ok((
        object_path(n.req_child(path_elem)?)?,
        instance(n.req_child("INSTANCE")?)?,
    ))
}

fn ireturn(op: &str, n: Option<&Node>) -> Result<IReturn> {
    let items: &[Node] = n.map_or(&[], |n| n.children.as_slice());
    let all = |f: &dyn Fn(&Node) -> Result<ObjectPath>| -> Result<Vec<ObjectPath>> {
        items.iter().map(f).collect()
    };
    Ok(match op {
        "EnumerateClassNames" => IReturn::ClassNames(
            items
                .iter()
                .map(|c| c.expect("CLASSNAME")?.req_attr("NAME").map(str::to_string))
                .collect::<Result<_>>()?,
        ),
        "GetClass" => IReturn::Class(class_decl(
            n.ok_or_else(|| invalid("no class"))?.only_child()?,
        )?),
        "EnumerateClasses" => {
            IReturn::Classes(items.iter().map(class_decl).collect::<Result<_>>()?)
        }
        "GetInstance" => IReturn::Instance(instance(
            n.ok_or_else(|| invalid("no instance"))?.only_child()?,
        )?),
        "EnumerateInstanceNames" => IReturn::InstanceNames(all(&instance_name)?),
        "EnumerateInstances" => IReturn::NamedInstances(
            items
                .iter()
                .map(|c| path_and_instance(c.expect("VALUE.NAMEDINSTANCE")?, "INSTANCENAME"))
                .collect::<Result<_>>()?,
        ),
        "Associators" | "References" => IReturn::ObjectsWithPath(
            items
                .iter()
                .map(|c| path_and_instance(c.expect("VALUE.OBJECTWITHPATH")?, "INSTANCEPATH"))
                .collect::<Result<_>>()?,
        ),
        "AssociatorNames" | "ReferenceNames" => IReturn::ObjectPaths(all(&|c: &Node| {
            object_path(c.expect("OBJECTPATH")?.only_child()?)
        })?),
        _ if items.is_empty() => IReturn::Nothing,
        o => return Err(invalid(format!("cannot read the result of {o}"))),
    })
}

fn error(n: &Node) -> Result<CimError> {
    let code = n.req_attr("CODE")?;
    Ok(CimError {
        code: code
            .parse()
            .map_err(|_| invalid(format!("bad error code {code:?}")))?,
        description: n.attr("DESCRIPTION").unwrap_or_default().to_string(),
    })
}

/// Parses a CIM operation response: its message ID and the response.
pub fn parse_response(input: &str) -> Result<(String, Response)> {
    let root = parse_tree(input, MAX_RESPONSE_ELEMENTS)?;
    let m = message(&root)?;
    let rsp = m.req_child("SIMPLERSP")?.only_child()?;
    let name = rsp.req_attr("NAME")?.to_string();
    let response = match rsp.name.as_str() {
        "IMETHODRESPONSE" => Response::Intrinsic {
            result: match rsp.child("ERROR") {
                Some(e) => Err(error(e)?),
                None => Ok(ireturn(&name, rsp.child("IRETURNVALUE"))?),
            },
            name,
        },
        "METHODRESPONSE" => Response::Extrinsic {
            result: match rsp.child("ERROR") {
                Some(e) => Err(error(e)?),
                None => {
                    let rv = rsp.req_child("RETURNVALUE")?;
                    let ty = rv.attr("PARAMTYPE").unwrap_or("string");
                    Ok(MethodReturn {
                        return_type: CimType::parse(ty)
                            .ok_or_else(|| invalid(format!("unknown type {ty:?}")))?,
                        return_value: rv.req_child("VALUE")?.text.clone(),
                        out: rsp
                            .children
                            .iter()
                            .filter(|c| c.name == "PARAMVALUE")
                            .map(param)
                            .collect::<Result<_>>()?,
                    })
                }
            },
            name,
        },
        o => return Err(invalid(format!("{o} in SIMPLERSP"))),
    };
    Ok((m.req_attr("ID")?.to_string(), response))
}

// ---------------------------------------------------------------------------------------------
// Writing CIM-XML

/// Appends XML to a string; attribute values and text are escaped.
struct W(String);

impl W {
    fn open(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.0.push('<');
        self.0.push_str(name);
        for (k, v) in attrs {
            let _ = write!(self.0, " {k}=\"{}\"", escape(*v));
        }
        self.0.push('>');
    }
    fn close(&mut self, name: &str) {
        let _ = write!(self.0, "</{name}>");
    }
    fn empty(&mut self, name: &str, attrs: &[(&str, &str)]) {
        self.open(name, attrs);
        self.0.pop();
        self.0.push_str("/>");
    }
    fn text(&mut self, t: &str) {
        self.0.push_str(&escape(t));
    }
    fn leaf(&mut self, name: &str, attrs: &[(&str, &str)], t: &str) {
        self.open(name, attrs);
        self.text(t);
        self.close(name);
    }

    fn start_message(&mut self, id: &str, kind: &str) {
        self.0
            .push_str("<?xml version=\"1.0\" encoding=\"utf-8\" ?>\n");
        self.open("CIM", &[("CIMVERSION", "2.0"), ("DTDVERSION", "2.0")]);
        self.open("MESSAGE", &[("ID", id), ("PROTOCOLVERSION", "1.0")]);
        self.open(kind, &[]);
    }
    fn end_message(&mut self, kind: &str) {
        self.close(kind);
        self.close("MESSAGE");
        self.close("CIM");
        self.0.push('\n');
    }

    fn local_namespace(&mut self, ns: &str) {
        self.open("LOCALNAMESPACEPATH", &[]);
        for part in ns.split('/').filter(|p| !p.is_empty()) {
            self.empty("NAMESPACE", &[("NAME", part)]);
        }
        self.close("LOCALNAMESPACEPATH");
    }

    fn instance_name(&mut self, p: &ObjectPath) {
        self.open("INSTANCENAME", &[("CLASSNAME", &p.class)]);
        for (name, v) in &p.keys {
            self.open("KEYBINDING", &[("NAME", name)]);
            match v {
                KeyValue::String(s) => self.leaf("KEYVALUE", &[("VALUETYPE", "string")], s),
                KeyValue::Numeric(s) => self.leaf("KEYVALUE", &[("VALUETYPE", "numeric")], s),
                KeyValue::Boolean(b) => {
                    self.leaf("KEYVALUE", &[("VALUETYPE", "boolean")], bool_text(*b))
                }
                KeyValue::Reference(r) => self.value_reference(r),
            }
            self.close("KEYBINDING");
        }
        self.close("INSTANCENAME");
    }

    /// The fullest path form the path's parts allow.
    fn path(&mut self, p: &ObjectPath) {
        let class_only = p.keys.is_empty();
        match (&p.host, &p.namespace) {
            (Some(host), Some(ns)) => {
                self.open(
                    if class_only {
                        "CLASSPATH"
                    } else {
                        "INSTANCEPATH"
                    },
                    &[],
                );
                self.open("NAMESPACEPATH", &[]);
                self.leaf("HOST", &[], host);
                self.local_namespace(ns);
                self.close("NAMESPACEPATH");
                self.path_tail(p);
                self.close(if class_only {
                    "CLASSPATH"
                } else {
                    "INSTANCEPATH"
                });
            }
            (_, Some(ns)) => {
                let e = if class_only {
                    "LOCALCLASSPATH"
                } else {
                    "LOCALINSTANCEPATH"
                };
                self.open(e, &[]);
                self.local_namespace(ns);
                self.path_tail(p);
                self.close(e);
            }
            _ => self.path_tail(p),
        }
    }
    fn path_tail(&mut self, p: &ObjectPath) {
        if p.keys.is_empty() {
            self.empty("CLASSNAME", &[("NAME", &p.class)]);
        } else {
            self.instance_name(p);
        }
    }

    fn value_reference(&mut self, p: &ObjectPath) {
        self.open("VALUE.REFERENCE", &[]);
        self.path(p);
        self.close("VALUE.REFERENCE");
    }

    fn value(&mut self, v: &Value) {
        match v {
            Value::Scalar(s) => self.leaf("VALUE", &[], s),
            Value::Array(a) => {
                self.open("VALUE.ARRAY", &[]);
                for s in a {
                    self.leaf("VALUE", &[], s);
                }
                self.close("VALUE.ARRAY");
            }
            Value::Reference(p) => self.value_reference(p),
            Value::ReferenceArray(a) => {
                self.open("VALUE.REFARRAY", &[]);
                for p in a {
                    self.value_reference(p);
                }
                self.close("VALUE.REFARRAY");
            }
        }
    }

    fn qualifiers(&mut self, qs: &[Qualifier]) {
        for q in qs {
            self.open("QUALIFIER", &[("NAME", &q.name), ("TYPE", q.ty.name())]);
            self.value(&q.value);
            self.close("QUALIFIER");
        }
    }

    /// A property; `decl` adds CLASSORIGIN and qualifiers (in a class).
    fn property(&mut self, p: &Property, decl: Option<(&str, &[Qualifier])>) {
        let name = p.name.as_str();
        let origin = decl.map(|(o, _)| o);
        let elem = if p.ty == CimType::Reference {
            "PROPERTY.REFERENCE"
        } else if p.array {
            "PROPERTY.ARRAY"
        } else {
            "PROPERTY"
        };
        let mut attrs: Vec<(&str, &str)> = vec![("NAME", name)];
        match (&p.reference_class, p.ty) {
            (Some(rc), CimType::Reference) => attrs.push(("REFERENCECLASS", rc)),
            (_, CimType::Reference) => {}
            (_, ty) => attrs.push(("TYPE", ty.name())),
        }
        if let Some(o) = origin.filter(|o| !o.is_empty()) {
            attrs.push(("CLASSORIGIN", o));
        }
        self.open(elem, &attrs);
        if let Some((_, qs)) = decl {
            self.qualifiers(qs);
        }
        if let Some(v) = &p.value {
            self.value(v);
        }
        self.close(elem);
    }

    fn instance(&mut self, i: &Instance) {
        self.open("INSTANCE", &[("CLASSNAME", &i.class)]);
        for p in &i.properties {
            self.property(p, None);
        }
        self.close("INSTANCE");
    }

    fn class(&mut self, c: &ClassDecl) {
        let mut attrs = vec![("NAME", c.name.as_str())];
        if let Some(s) = &c.superclass {
            attrs.push(("SUPERCLASS", s));
        }
        self.open("CLASS", &attrs);
        self.qualifiers(&c.qualifiers);
        for p in &c.properties {
            let prop = Property {
                name: p.name.clone(),
                ty: p.ty,
                array: p.array,
                reference_class: p.reference_class.clone(),
                value: None,
            };
            self.property(&prop, Some((&p.class_origin, &p.qualifiers)));
        }
        for m in &c.methods {
            let mut attrs = vec![("NAME", m.name.as_str()), ("TYPE", m.return_type.name())];
            if !m.class_origin.is_empty() {
                attrs.push(("CLASSORIGIN", &m.class_origin));
            }
            self.open("METHOD", &attrs);
            self.qualifiers(&m.qualifiers);
            for p in &m.parameters {
                let (elem, attrs): (&str, Vec<(&str, &str)>) = match (p.ty, p.array) {
                    (CimType::Reference, array) => (
                        if array {
                            "PARAMETER.REFARRAY"
                        } else {
                            "PARAMETER.REFERENCE"
                        },
                        p.reference_class
                            .as_deref()
                            .map(|rc| vec![("NAME", p.name.as_str()), ("REFERENCECLASS", rc)])
                            .unwrap_or_else(|| vec![("NAME", p.name.as_str())]),
                    ),
                    (ty, false) => ("PARAMETER", vec![("NAME", &p.name), ("TYPE", ty.name())]),
                    (ty, true) => (
                        "PARAMETER.ARRAY",
                        vec![("NAME", &p.name), ("TYPE", ty.name())],
                    ),
                };
                self.open(elem, &attrs);
                self.qualifiers(&p.qualifiers);
                self.close(elem);
            }
            self.close("METHOD");
        }
        self.close("CLASS");
    }

    fn param(&mut self, elem: &str, p: &Param) {
        let mut attrs = vec![("NAME", p.name.as_str())];
        if elem == "PARAMVALUE" {
            if let Some(t) = p.ty {
                attrs.push(("PARAMTYPE", t.name()));
            }
        }
        let embedded = matches!(
            p.value,
            ParamValue::EmbeddedInstance(_) | ParamValue::EmbeddedInstances(_)
        );
        if embedded {
            attrs.push(("EmbeddedObject", "instance"));
        }
        self.open(elem, &attrs);
        match &p.value {
            ParamValue::Null | ParamValue::Unsupported(_) | ParamValue::EmbeddedInstance(None) => {}
            ParamValue::EmbeddedInstance(Some(i)) => self.leaf("VALUE", &[], &embedded_instance(i)),
            ParamValue::EmbeddedInstances(v) => {
                self.open("VALUE.ARRAY", &[]);
                for i in v {
                    self.leaf("VALUE", &[], &embedded_instance(i));
                }
                self.close("VALUE.ARRAY");
            }
            ParamValue::Value(v) => self.value(v),
            ParamValue::ClassName(c) => self.empty("CLASSNAME", &[("NAME", c)]),
            ParamValue::InstanceName(i) => self.instance_name(i),
        }
        self.close(elem);
    }

    fn error(&mut self, e: &CimError) {
        self.empty(
            "ERROR",
            &[
                ("CODE", &e.code.to_string()),
                ("DESCRIPTION", &e.description),
            ],
        );
    }

    fn ireturn(&mut self, r: &IReturn) {
        self.open("IRETURNVALUE", &[]);
        match r {
            IReturn::Nothing => {}
            IReturn::ClassNames(names) => {
                for n in names {
                    self.empty("CLASSNAME", &[("NAME", n)]);
                }
            }
            IReturn::Class(c) => self.class(c),
            IReturn::Classes(cs) => cs.iter().for_each(|c| self.class(c)),
            IReturn::Instance(i) => self.instance(i),
            IReturn::InstanceNames(ps) => ps.iter().for_each(|p| self.instance_name(p)),
            IReturn::NamedInstances(v) => {
                for (p, i) in v {
                    self.open("VALUE.NAMEDINSTANCE", &[]);
                    self.instance_name(p);
                    self.instance(i);
                    self.close("VALUE.NAMEDINSTANCE");
                }
            }
            IReturn::ObjectsWithPath(v) => {
                for (p, i) in v {
                    self.open("VALUE.OBJECTWITHPATH", &[]);
                    self.path(p);
                    self.instance(i);
                    self.close("VALUE.OBJECTWITHPATH");
                }
            }
            IReturn::ObjectPaths(ps) => {
                for p in ps {
                    self.open("OBJECTPATH", &[]);
                    self.path(p);
                    self.close("OBJECTPATH");
                }
            }
        }
        self.close("IRETURNVALUE");
    }
}

/// Writes a request (for clients: the tests and the benchmark).
pub fn write_request(r: &Request) -> String {
    let mut w = W(String::with_capacity(1024));
    w.start_message(&r.message_id, "SIMPLEREQ");
    match &r.call {
        Call::Intrinsic { name, namespace } => {
            w.open("IMETHODCALL", &[("NAME", name)]);
            w.local_namespace(namespace);
            for p in &r.params {
                w.param("IPARAMVALUE", p);
            }
            w.close("IMETHODCALL");
        }
        Call::Extrinsic { name, target } => {
            w.open("METHODCALL", &[("NAME", name)]);
            let local = ObjectPath {
                host: None,
                namespace: Some(target.namespace.clone().unwrap_or_default()),
                ..target.clone()
            };
            w.path(&local);
            for p in &r.params {
                w.param("PARAMVALUE", p);
            }
            w.close("METHODCALL");
        }
    }
    w.end_message("SIMPLEREQ");
    w.0
}

/// Writes the response to message `id`.
pub fn write_response(id: &str, r: &Response) -> String {
    let mut w = W(String::with_capacity(4096));
    w.start_message(id, "SIMPLERSP");
    match r {
        Response::Intrinsic { name, result } => {
            w.open("IMETHODRESPONSE", &[("NAME", name)]);
            match result {
                Ok(r) => w.ireturn(r),
                Err(e) => w.error(e),
            }
            w.close("IMETHODRESPONSE");
        }
        Response::Extrinsic { name, result } => {
            w.open("METHODRESPONSE", &[("NAME", name)]);
            match result {
                Ok(m) => {
                    w.open("RETURNVALUE", &[("PARAMTYPE", m.return_type.name())]);
                    w.leaf("VALUE", &[], &m.return_value);
                    w.close("RETURNVALUE");
                    for p in &m.out {
                        w.param("PARAMVALUE", p);
                    }
                }
                Err(e) => w.error(e),
            }
            w.close("METHODRESPONSE");
        }
    }
    w.end_message("SIMPLERSP");
    w.0
}

/// A DSP0004 datetime for `secs` since the Unix epoch, in UTC.
pub fn datetime(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}{m:02}{d:02}{:02}{:02}{:02}.000000+000",
        rem / 3600,
        rem / 60 % 60,
        rem % 60
    )
}

/// A DSP0004 interval for `secs` seconds (with fraction).
pub fn interval(secs: f64) -> String {
    let micros = (secs.max(0.0) * 1e6) as u64;
    let s = micros / 1_000_000;
    format!(
        "{:08}{:02}{:02}{:02}.{:06}:000",
        s / 86_400,
        s / 3600 % 24,
        s / 60 % 60,
        s % 60,
        micros % 1_000_000
    )
}

/// Days since 1970-01-01 to a civil date (proleptic Gregorian; H. Hinnant's algorithm). Also
/// the CLI's, for the dates it prints.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}
