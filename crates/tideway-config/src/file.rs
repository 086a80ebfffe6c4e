//! The whole file: every section in turn, then the checks that span sections and apps.

use std::collections::HashMap;

use tideway_core::{Policy, PolicyProblem};
use toml::Table;

use crate::app::Draft;
use crate::cluster::ClusterSettings;
use crate::cookie::CookieSettings;
use crate::host::HostPattern;
use crate::kubernetes::KubernetesSettings;
use crate::listeners::{AdminSettings, MetricsSettings, ProxySettings, clash};
use crate::policy::Overlay;
use crate::walk::{Errors, Section};
use crate::{AppConfig, Config, FieldError};

/// Reads and validates a parsed file, reporting every error at once.
pub(crate) fn read(table: &Table) -> Result<Config, Vec<FieldError>> {
    let mut errors = Errors::default();
    let mut root = Section::new("", table);

    let proxy = root
        .table("proxy", &mut errors)
        .map(|section| ProxySettings::read(section, &mut errors))
        .unwrap_or_default();
    let metrics = root
        .table("metrics", &mut errors)
        .map(|section| MetricsSettings::read(section, &mut errors));
    let admin = root
        .table("admin", &mut errors)
        .map(|section| AdminSettings::read(section, &mut errors));
    let kubernetes = root
        .table("kubernetes", &mut errors)
        .map(|section| KubernetesSettings::read(section, &mut errors))
        .unwrap_or_default();
    let cluster = root
        .table("cluster", &mut errors)
        .and_then(|section| ClusterSettings::read(section, &mut errors));
    let cookie = root
        .table("cookie", &mut errors)
        .map(|section| CookieSettings::read(section, &mut errors))
        .unwrap_or_default();
    check_listeners(
        &proxy,
        metrics.as_ref(),
        admin.as_ref(),
        cluster.as_ref(),
        &mut errors,
    );

    let no_apps_declared = table
        .get("app")
        .is_some_and(|apps| apps.as_array().is_some_and(Vec::is_empty));
    let (defaults, defaults_problems) = read_defaults(&mut root, &mut errors, &proxy.base_policy());
    let drafts: Vec<Draft> = root
        .tables("app", &mut errors)
        .into_iter()
        .map(|section| {
            let draft = Draft::read(section, &mut errors, &defaults);
            report_app_problems(&draft, &defaults_problems, &mut errors);
            draft
        })
        .collect();
    check_names(&drafts, &mut errors);
    check_routes(&drafts, &mut errors);
    check_certificates(table, &proxy, &kubernetes, &drafts, &mut errors);
    root.finish(&mut errors);

    if !errors.is_empty() {
        return Err(errors.into_vec());
    }
    Ok(Config {
        deprecations: errors.deprecations(),
        proxy,
        metrics,
        admin,
        kubernetes,
        cluster,
        cookie,
        defaults,
        apps: drafts.into_iter().filter_map(Draft::build).collect(),
        no_apps_declared,
    })
}

/// Reads one app declared outside the file — the spec of a `TidewayApp` resource — by the rules of an
/// `[[app]]` table: `table` holds its keys, `path` names it in errors (`spec`), `defaults` is the policy it
/// falls back to (the file's `[defaults]`).
pub fn read_app(path: &str, table: &Table, defaults: &Policy) -> Result<AppConfig, Vec<FieldError>> {
    let mut errors = Errors::default();
    let draft = Draft::read(Section::new(path, table), &mut errors, defaults);
    report_app_problems(&draft, &[], &mut errors);
    match draft.build() {
        Some(app) if errors.is_empty() => Ok(app),
        _ => Err(errors.into_vec()),
    }
}

/// Reads `[defaults]` over `base` and reports its problems; returns the policy apps start from and the
/// problems reported, so that apps inheriting them do not repeat them.
fn read_defaults(root: &mut Section<'_>, errors: &mut Errors, base: &Policy) -> (Policy, Vec<PolicyProblem>) {
    let Some(mut section) = root.table("defaults", errors) else {
        return (base.clone(), Vec::new());
    };
    let overlay = Overlay::read(&mut section, errors, base);
    let problems = overlay.problems();
    for problem in &problems {
        errors.push(section.key_path(problem.key), problem.message.clone());
    }
    section.finish(errors);
    (overlay.policy, problems)
}

/// Reports an app's policy problems, except those it merely inherited from an already reported `[defaults]`.
fn report_app_problems(draft: &Draft, defaults_problems: &[PolicyProblem], errors: &mut Errors) {
    for problem in draft.policy.problems() {
        let inherited = !draft.policy.set.contains(&problem.key);
        if inherited && defaults_problems.contains(&problem) {
            continue;
        }
        errors.push(format!("{}.{}", draft.path, problem.key), problem.message);
    }
}

/// Listeners must not share a port.
fn check_listeners(
    proxy: &ProxySettings,
    metrics: Option<&MetricsSettings>,
    admin: Option<&AdminSettings>,
    cluster: Option<&ClusterSettings>,
    errors: &mut Errors,
) {
    let mut seen = vec![("proxy.listen", proxy.listen)];
    let others = [
        ("proxy.tls_listen", proxy.tls_listen),
        ("metrics.listen", metrics.map(|m| m.listen)),
        ("admin.listen", admin.map(|a| a.listen)),
        ("cluster.listen", cluster.map(|c| c.listen)),
    ];
    for (path, listen) in others {
        let Some(listen) = listen else { continue };
        if let Some((other, address)) = seen.iter().find(|(_, address)| clash(listen, *address)) {
            errors.push(path, format!("conflicts with {other} ({address})"));
        }
        seen.push((path, listen));
    }
}

/// An HTTPS listener needs a certificate to present (the apps of `TidewayApp` resources may bring theirs
/// in Kubernetes mode), and one host name has one certificate.
fn check_certificates(
    table: &Table,
    proxy: &ProxySettings,
    kubernetes: &KubernetesSettings,
    drafts: &[Draft],
    errors: &mut Errors,
) {
    // A certificate given but invalid is reported where it is; it still counts as given here.
    let names_certificate = |section: Option<&toml::Value>| {
        section
            .and_then(toml::Value::as_table)
            .is_some_and(|s| s.contains_key("tls_certificate") || s.contains_key("tls_key"))
    };
    let apps = table.get("app").and_then(toml::Value::as_array);
    let any_certificate = names_certificate(table.get("proxy"))
        || apps.is_some_and(|apps| apps.iter().any(|app| names_certificate(Some(app))));
    if proxy.tls_listen.is_some() && !any_certificate && kubernetes.tidewayapps == crate::ResourceScope::Off {
        errors.push(
            "proxy.tls_certificate",
            "required with tls_listen, unless apps name certificates of their own",
        );
    }
    if proxy.tls_listen.is_none() {
        if proxy.tls.is_some() {
            errors.push("proxy.tls_listen", "required with tls_certificate");
        }
        for draft in drafts.iter().filter(|d| d.tls.is_some()) {
            errors.push(
                format!("{}.tls_certificate", draft.path),
                "needs proxy.tls_listen",
            );
        }
    }
    let mut claimed: HashMap<&HostPattern, &Draft> = HashMap::new();
    for draft in drafts {
        let Some(tls) = &draft.tls else { continue };
        for (k, host) in &draft.hosts {
            match claimed.get(host) {
                Some(owner) if owner.tls.as_ref() != Some(tls) => errors.push(
                    format!("{}.hosts[{k}]", draft.path),
                    format!(
                        "\"{host}\" has another certificate already, from {}",
                        owner.label()
                    ),
                ),
                Some(_) => {}
                None => {
                    claimed.insert(host, draft);
                }
            }
        }
    }
}

/// App names are unique; the later app is at fault.
fn check_names(drafts: &[Draft], errors: &mut Errors) {
    for (i, draft) in drafts.iter().enumerate() {
        let Some(name) = &draft.name else { continue };
        if let Some(first) = drafts[..i].iter().find(|d| d.name.as_ref() == Some(name)) {
            errors.push(
                format!("{}.name", draft.path),
                format!("\"{name}\" is already used by {}", first.path),
            );
        }
    }
}

/// No two apps may claim the same (host pattern, path prefix) pair; no hosts = any host, no prefix = `/`.
fn check_routes(drafts: &[Draft], errors: &mut Errors) {
    let mut routes: HashMap<(Option<&HostPattern>, &str), &Draft> = HashMap::new();
    for draft in drafts.iter().filter(|d| d.routes_valid) {
        let prefix = draft.path_prefix.as_deref().unwrap_or("/");
        let claims: Vec<(Option<&HostPattern>, String)> = if draft.hosts.is_empty() {
            if draft.path_prefix.is_none() {
                continue; // no route at all: reported as missing hosts/path_prefix
            }
            vec![(None, format!("{}.path_prefix", draft.path))]
        } else {
            draft
                .hosts
                .iter()
                .map(|(k, host)| (Some(host), format!("{}.hosts[{k}]", draft.path)))
                .collect()
        };
        for (host, path) in claims {
            match routes.get(&(host, prefix)) {
                Some(owner) => {
                    let host = host.map(ToString::to_string).unwrap_or_default();
                    errors.push(
                        path,
                        format!("route \"{host}{prefix}\" is already used by {}", owner.label()),
                    );
                }
                None => {
                    routes.insert((host, prefix), draft);
                }
            }
        }
    }
}
