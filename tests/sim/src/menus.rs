//! Menu specs: the fields, defaults, keys and messages of every table menu, per personality.
//!
//! Field order is the print order (routeros-replies.md; where its order is [I] the console
//! column order is used). Fields without a default are absent until set ("can be absent"
//! fields such as `remote-address`). Computed menus (`/ppp/active`, `/interface`,
//! `/system/resource`, …) are built in `device.rs`.

use crate::model::{Field, Kind, MenuSpec};
use crate::personality::Personality;

const BOOL: Kind = Kind::Bool;
const YES_NO_DEFAULT: Kind = Kind::Enum(&["yes", "no", "default", "required"]);
const PPP_SERVICES: Kind = Kind::Enum(&["any", "async", "l2tp", "ovpn", "pppoe", "pptp", "sstp"]);

/// Path of each table menu, in the order they are listed and exported.
pub const PPP_PROFILE: &str = "/ppp/profile";
/// `/ppp/secret`.
pub const PPP_SECRET: &str = "/ppp/secret";
/// `/ip/hotspot/user/profile`.
pub const HS_PROFILE: &str = "/ip/hotspot/user/profile";
/// `/ip/hotspot/user`.
pub const HS_USER: &str = "/ip/hotspot/user";
/// `/ip/firewall/address-list`.
pub const ADDRESS_LIST: &str = "/ip/firewall/address-list";
/// `/queue/simple`.
pub const QUEUE: &str = "/queue/simple";
/// `/user/group`.
pub const USER_GROUP: &str = "/user/group";
/// `/user`.
pub const USER: &str = "/user";
/// `/ip/service`.
pub const SERVICE: &str = "/ip/service";
/// `/file`.
pub const FILE: &str = "/file";

/// All table menus for a personality.
pub fn table_specs(p: &Personality) -> Vec<MenuSpec> {
    let mut secret = vec![
        Field::new("name"),
        Field::new("service").kind(PPP_SERVICES).def("any"),
        Field::new("caller-id").def(""),
        Field::new("password").def("").sensitive(),
        Field::new("profile")
            .kind(Kind::Ref(PPP_PROFILE, &[]))
            .def("default"),
        Field::new("local-address").kind(Kind::Address),
        Field::new("remote-address").kind(Kind::Address),
        Field::new("routes").def(""),
    ];
    if p.ipv6_routes {
        secret.push(Field::new("ipv6-routes").def(""));
    }
    secret.extend([
        Field::new("limit-bytes-in").kind(Kind::Int).def("0"),
        Field::new("limit-bytes-out").kind(Kind::Int).def("0"),
        // Filled at add with "never" in the version's date format (device.rs).
        Field::new("last-logged-out").ro(),
        // Absent until the first logout [U].
        Field::new("last-caller-id").ro(),
        Field::new("last-disconnect-reason").ro(),
        Field::new("disabled").kind(BOOL).def("false"),
        Field::new("comment"),
    ]);

    let profile = vec![
        Field::new("name"),
        Field::new("local-address"),
        Field::new("remote-address"),
        Field::new("bridge-learning")
            .kind(YES_NO_DEFAULT)
            .def("default"),
        Field::new("use-mpls").kind(YES_NO_DEFAULT).def("default"),
        Field::new("use-compression")
            .kind(YES_NO_DEFAULT)
            .def("default"),
        Field::new("use-encryption")
            .kind(YES_NO_DEFAULT)
            .def("default"),
        Field::new("only-one").kind(YES_NO_DEFAULT).def("default"),
        Field::new("change-tcp-mss")
            .kind(YES_NO_DEFAULT)
            .def("default"),
        Field::new("use-upnp").kind(YES_NO_DEFAULT).def("default"),
        Field::new("address-list").def(""),
        Field::new("on-up").def(""),
        Field::new("on-down").def(""),
        // Can-be-absent fields: position among them is [I].
        Field::new("rate-limit"),
        Field::new("dns-server"),
        Field::new("idle-timeout").kind(Kind::Duration),
        Field::new("session-timeout").kind(Kind::Duration),
        Field::new("parent-queue"),
        Field::new("default").kind(BOOL).def("false").ro(),
        Field::new("comment"),
    ];

    let hs_user = vec![
        // `server=all` is sent (ANS default; TF omits it) [U].
        Field::new("server")
            .kind(Kind::Enum(&["all", "hotspot1"]))
            .def("all"),
        Field::new("name"),
        Field::new("password").def("").sensitive(),
        Field::new("address").kind(Kind::Address),
        Field::new("mac-address"),
        Field::new("profile")
            .kind(Kind::Ref(HS_PROFILE, &[]))
            .def("default"),
        Field::new("routes"),
        Field::new("email"),
        Field::new("limit-uptime").kind(Kind::Duration),
        Field::new("limit-bytes-in").kind(Kind::Int),
        Field::new("limit-bytes-out").kind(Kind::Int),
        Field::new("limit-bytes-total").kind(Kind::Int),
        Field::new("uptime").def("0s").ro(),
        Field::new("bytes-in").def("0").ro(),
        Field::new("bytes-out").def("0").ro(),
        Field::new("packets-in").def("0").ro(),
        Field::new("packets-out").def("0").ro(),
        Field::new("dynamic").kind(BOOL).def("false").ro(),
        Field::new("disabled").kind(BOOL).def("false"),
        Field::new("comment"),
    ];

    let hs_profile = vec![
        Field::new("name"),
        Field::new("idle-timeout").def("none"),
        Field::new("keepalive-timeout").def("2m"),
        Field::new("status-autorefresh").def("1m"),
        Field::new("shared-users").def("1"),
        Field::new("rate-limit"),
        Field::new("add-mac-cookie").kind(BOOL).def("true"),
        Field::new("mac-cookie-timeout").def("3d"),
        Field::new("address-list").def(""),
        Field::new("session-timeout").kind(Kind::Duration),
        Field::new("transparent-proxy").kind(BOOL).def("false"),
        Field::new("open-status-page")
            .kind(Kind::Enum(&["always", "http-login"]))
            .def("always"),
        Field::new("advertise").kind(BOOL).def("false"),
        Field::new("on-login"),
        Field::new("on-logout"),
    ];

    let address_list = vec![
        Field::new("list"),
        Field::new("address"),
        Field::new("creation-time").ro(),
        // Present (remaining time) only on dynamic entries [I].
        Field::new("timeout").kind(Kind::Duration),
        Field::new("dynamic").kind(BOOL).def("false").ro(),
        Field::new("disabled").kind(BOOL).def("false"),
        Field::new("comment"),
    ];

    let mut queue = vec![
        Field::new("name"),
        Field::new("target").kind(Kind::Target),
        Field::new("parent")
            .kind(Kind::Ref(QUEUE, &["none"]))
            .def("none"),
        Field::new("packet-marks").def(""),
        Field::new("priority").def("8/8"),
        Field::new("queue").def("default-small/default-small"),
        Field::new("limit-at").kind(Kind::RatePair).def("0/0"),
        Field::new("max-limit").kind(Kind::RatePair).def("0/0"),
        Field::new("burst-limit").kind(Kind::RatePair).def("0/0"),
        Field::new("burst-threshold")
            .kind(Kind::RatePair)
            .def("0/0"),
        Field::new("burst-time").def("0s/0s"),
    ];
    if p.queue_bucket_size {
        queue.push(Field::new("bucket-size").def("0.1/0.1"));
    }
    queue.extend([
        Field::new("bytes").def("0/0").ro(),
        Field::new("total-bytes").def("0").ro(),
        Field::new("packets").def("0/0").ro(),
        Field::new("total-packets").def("0").ro(),
        Field::new("dropped").def("0/0").ro(),
        Field::new("total-dropped").def("0").ro(),
        Field::new("rate").def("0/0").ro(),
        Field::new("total-rate").def("0").ro(),
        Field::new("invalid").kind(BOOL).def("false").ro(),
        Field::new("dynamic").kind(BOOL).def("false").ro(),
        Field::new("disabled").kind(BOOL).def("false"),
        Field::new("comment"),
    ]);

    let user = vec![
        Field::new("name"),
        Field::new("group").kind(Kind::Ref(USER_GROUP, &[])),
        Field::new("address").def(""),
        Field::new("last-logged-in").ro(),
        Field::new("disabled").kind(BOOL).def("false"),
        Field::new("comment"),
        // Write-only: never printed [I].
        Field::new("password").def("").hidden(),
    ];
    let group = vec![
        Field::new("name"),
        Field::new("policy").def(""),
        Field::new("skin").def("default"),
    ];

    let mut service = vec![
        Field::new("name").ro(),
        Field::new("port").kind(Kind::Int),
        Field::new("address").def(""),
        Field::new("certificate"),
        Field::new("tls-version"),
    ];
    if p.service_vrf {
        service.push(Field::new("vrf").def("main"));
    }
    service.extend([
        Field::new("invalid").kind(BOOL).def("false").ro(),
        Field::new("disabled").kind(BOOL).def("false"),
    ]);

    let file = vec![
        Field::new("name").ro(),
        Field::new("type").ro(),
        Field::new("size").ro(),
        Field::new("creation-time").ro(),
    ];

    vec![
        MenuSpec::new(
            PPP_PROFILE,
            profile,
            &["name"],
            "failure: profile with the same name already exists",
            &["name"],
            true,
        ),
        MenuSpec::new(
            PPP_SECRET,
            secret,
            &["name"],
            "failure: secret with the same name already exists",
            &["name"],
            true,
        ),
        MenuSpec::new(
            HS_PROFILE,
            hs_profile,
            &["name"],
            "failure: profile with the same name already exists",
            &["name"],
            true,
        ),
        MenuSpec::new(
            HS_USER,
            hs_user,
            &["name"],
            "failure: already have user with this name for this server",
            &["name"],
            true,
        ),
        MenuSpec::new(
            ADDRESS_LIST,
            address_list,
            &["list", "address"],
            "failure: already have such entry",
            &["list", "address"],
            true,
        ),
        MenuSpec::new(
            QUEUE,
            queue,
            &["name"],
            "failure: already have such name",
            &["target"],
            true,
        ),
        MenuSpec::new(
            USER_GROUP,
            group,
            &["name"],
            "failure: group with the same name already exists",
            &["name"],
            true,
        ),
        MenuSpec::new(
            USER,
            user,
            &["name"],
            "failure: user with the same name already exists",
            &["name", "group"],
            true,
        ),
        MenuSpec::new(
            SERVICE,
            service,
            &["name"],
            "failure: already have such name",
            &[],
            false,
        ),
        MenuSpec::new(
            FILE,
            file,
            &["name"],
            "failure: file already exists",
            &[],
            false,
        ),
    ]
}
