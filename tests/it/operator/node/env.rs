//! A container's environment as the kubelet builds it.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use k8s_openapi::api::core::v1::{ConfigMap, Container, EnvVar, Pod, Secret, Service};
use kube::api::ListParams;
use kube::{Api, ResourceExt};

use super::{net, Shared, NODE_NAME};

/// `$(VAR)` expansion as the kubelet does it (`$$` escapes; unknown stays).
pub(super) fn expand(s: &str, vars: &HashMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(tail) = after.strip_prefix('$') {
            out.push('$');
            rest = tail;
        } else if let Some(inner) = after.strip_prefix('(') {
            match inner.find(')') {
                Some(end) if vars.contains_key(&inner[..end]) => {
                    out.push_str(&vars[&inner[..end]]);
                    rest = &inner[end + 1..];
                }
                _ => {
                    out.push('$');
                    rest = after;
                }
            }
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    out
}

/// The container's environment as the kubelet builds it: service-link
/// variables (unless the pod turns them off) and the master Service's, then
/// `envFrom`, then `env` (later wins), with references resolved.
pub(super) async fn resolve_env(
    shared: &Shared,
    pod: &Pod,
    c: &Container,
    ip: Ipv4Addr,
) -> Result<Vec<(String, String)>, String> {
    let ns = pod.namespace().unwrap_or_default();
    let spec = pod.spec.as_ref().ok_or("no spec")?;
    let mut vars: Vec<(String, String)> = Vec::new();
    let set = |vars: &mut Vec<(String, String)>, k: String, v: String| {
        vars.retain(|(x, _)| *x != k);
        vars.push((k, v));
    };
    let services: Api<Service> = Api::namespaced(shared.client.clone(), &ns);
    let mut linked: Vec<Service> = Vec::new();
    if spec.enable_service_links != Some(false) {
        linked.extend(
            services
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?,
        );
    }
    let default: Api<Service> = Api::namespaced(shared.client.clone(), "default");
    if let Ok(k) = default.get("kubernetes").await {
        linked.retain(|s| !(ns == "default" && s.name_any() == "kubernetes"));
        linked.push(k);
    }
    for svc in &linked {
        for (k, v) in service_link_vars(svc) {
            set(&mut vars, k, v);
        }
    }
    let secrets: Api<Secret> = Api::namespaced(shared.client.clone(), &ns);
    let config_maps: Api<ConfigMap> = Api::namespaced(shared.client.clone(), &ns);
    for from in c.env_from.iter().flatten() {
        let prefix = from.prefix.clone().unwrap_or_default();
        if let Some(r) = &from.secret_ref {
            match secrets.get(&r.name).await {
                Ok(s) => {
                    for (k, v) in s.data.unwrap_or_default() {
                        set(
                            &mut vars,
                            format!("{prefix}{k}"),
                            String::from_utf8_lossy(&v.0).into(),
                        );
                    }
                }
                Err(_) if r.optional == Some(true) => {}
                Err(e) => return Err(format!("secret {:?} not found: {e}", r.name)),
            }
        }
        if let Some(r) = &from.config_map_ref {
            match config_maps.get(&r.name).await {
                Ok(m) => {
                    for (k, v) in m.data.unwrap_or_default() {
                        set(&mut vars, format!("{prefix}{k}"), v);
                    }
                }
                Err(_) if r.optional == Some(true) => {}
                Err(e) => return Err(format!("configmap {:?} not found: {e}", r.name)),
            }
        }
    }
    for e in c.env.iter().flatten() {
        if let Some(v) = env_value(e, pod, ip, &secrets, &config_maps, &vars).await? {
            set(&mut vars, e.name.clone(), v);
        }
    }
    Ok(vars)
}

async fn env_value(
    e: &EnvVar,
    pod: &Pod,
    ip: Ipv4Addr,
    secrets: &Api<Secret>,
    config_maps: &Api<ConfigMap>,
    earlier: &[(String, String)],
) -> Result<Option<String>, String> {
    let Some(from) = &e.value_from else {
        let vars: HashMap<String, String> = earlier.iter().cloned().collect();
        return Ok(Some(expand(e.value.as_deref().unwrap_or_default(), &vars)));
    };
    if let Some(r) = &from.secret_key_ref {
        return match secrets.get(&r.name).await {
            Ok(s) => match s.data.unwrap_or_default().get(&r.key) {
                Some(v) => Ok(Some(String::from_utf8_lossy(&v.0).into())),
                None if r.optional == Some(true) => Ok(None),
                None => Err(format!("couldn't find key {} in Secret {}", r.key, r.name)),
            },
            Err(_) if r.optional == Some(true) => Ok(None),
            Err(err) => Err(format!("secret {:?} not found: {err}", r.name)),
        };
    }
    if let Some(r) = &from.config_map_key_ref {
        return match config_maps.get(&r.name).await {
            Ok(m) => match m.data.unwrap_or_default().get(&r.key) {
                Some(v) => Ok(Some(v.clone())),
                None if r.optional == Some(true) => Ok(None),
                None => Err(format!(
                    "couldn't find key {} in ConfigMap {}",
                    r.key, r.name
                )),
            },
            Err(_) if r.optional == Some(true) => Ok(None),
            Err(err) => Err(format!("configmap {:?} not found: {err}", r.name)),
        };
    }
    if let Some(f) = &from.field_ref {
        let spec = pod.spec.as_ref();
        let v = match f.field_path.as_str() {
            "metadata.name" => pod.name_any(),
            "metadata.namespace" => pod.namespace().unwrap_or_default(),
            "metadata.uid" => pod.uid().unwrap_or_default(),
            "spec.nodeName" => NODE_NAME.to_string(),
            "spec.serviceAccountName" => spec
                .and_then(|s| s.service_account_name.clone())
                .unwrap_or("default".into()),
            "status.podIP" => ip.to_string(),
            "status.hostIP" => net::GATEWAY.to_string(),
            other => return Err(format!("fieldRef {other} is not supported on this node")),
        };
        return Ok(Some(v));
    }
    Err(format!(
        "env {}: resourceFieldRef is not supported on this node",
        e.name
    ))
}

/// `<NAME>_SERVICE_HOST`, `<NAME>_PORT_8080_TCP_ADDR`, ... as the kubelet injects them.
fn service_link_vars(svc: &Service) -> Vec<(String, String)> {
    let Some(spec) = &svc.spec else {
        return vec![];
    };
    let Some(ip) = spec
        .cluster_ip
        .clone()
        .filter(|ip| ip != "None" && !ip.is_empty())
    else {
        return vec![];
    };
    let name = svc.name_any().to_uppercase().replace('-', "_");
    let ports = spec.ports.clone().unwrap_or_default();
    let mut out = vec![(format!("{name}_SERVICE_HOST"), ip.clone())];
    if let Some(first) = ports.first() {
        out.push((format!("{name}_SERVICE_PORT"), first.port.to_string()));
        let proto = first
            .protocol
            .clone()
            .unwrap_or("TCP".into())
            .to_lowercase();
        out.push((
            format!("{name}_PORT"),
            format!("{proto}://{ip}:{}", first.port),
        ));
    }
    for p in &ports {
        let proto = p.protocol.clone().unwrap_or("TCP".into());
        if let Some(pn) = &p.name {
            out.push((
                format!(
                    "{name}_SERVICE_PORT_{}",
                    pn.to_uppercase().replace('-', "_")
                ),
                p.port.to_string(),
            ));
        }
        let base = format!("{name}_PORT_{}_{}", p.port, proto.to_uppercase());
        out.push((
            base.clone(),
            format!("{}://{ip}:{}", proto.to_lowercase(), p.port),
        ));
        out.push((format!("{base}_PROTO"), proto.to_lowercase()));
        out.push((format!("{base}_PORT"), p.port.to_string()));
        out.push((format!("{base}_ADDR"), ip.clone()));
    }
    out
}
