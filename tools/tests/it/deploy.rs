//! The deployment files: deploy/, docker-compose.yml, Dockerfile.
//!
//! Offline: the Kubernetes objects are rendered with `kubectl kustomize`
//! (through `deploy/validate.sh --render-only`) and read with PyYAML; nothing
//! here needs a cluster, a Docker engine or the network. Schema validation,
//! checkov and the compose simulation live in deploy/validate.sh.

use serde_json::Value;
use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").canonicalize().expect("repository root")
}

fn pglb() -> Command {
    Command::new(env!("CARGO_BIN_EXE_pglb"))
}

/// `pglb check -f FILE`: asserts exit 0 and no warning.
fn assert_checks_clean(path: &Path) {
    let out = pglb().args(["check", "-f"]).arg(path).output().expect("run pglb check");
    let (stdout, stderr) = (String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "pglb check -f {} failed:\n{stderr}{stdout}", path.display());
    assert!(stdout.contains("0 warning(s)"), "pglb check -f {} warns:\n{stderr}{stdout}", path.display());
}

/// Every YAML document of a file, as JSON values (PyYAML does the reading).
fn yaml_docs(path: &Path) -> Vec<Value> {
    let out = Command::new("python3")
        .args(["-c", "import sys, json, yaml; json.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d], sys.stdout)"])
        .arg(path)
        .output()
        .expect("run python3");
    assert!(out.status.success(), "python3 could not read {}: {}", path.display(), String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("JSON from python3")
}

/// Renders every kustomization: file stem (`pglb`, `overlays-argo`,
/// `overlays-failover-testing`) → its objects.
fn rendered() -> BTreeMap<String, Vec<Value>> {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = Command::new("bash").arg(repo().join("deploy/validate.sh")).arg("--render-only").arg(dir.path()).output().expect("run validate.sh");
    assert!(
        out.status.success(),
        "deploy/validate.sh --render-only failed (kubectl kustomize):\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let mut all = BTreeMap::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        all.insert(name, yaml_docs(&path));
    }
    assert_eq!(all.keys().map(String::as_str).collect::<Vec<_>>(), ["overlays-argo", "overlays-failover-testing", "overlays-parallel", "pglb"]);
    all
}

fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objects.iter().find(|o| o["kind"] == kind && o["metadata"]["name"] == name).unwrap_or_else(|| {
        panic!("no {kind} named {name} among {:?}", objects.iter().map(|o| format!("{}/{}", o["kind"], o["metadata"]["name"])).collect::<Vec<_>>())
    })
}

fn find_kind<'a>(objects: &'a [Value], kind: &str) -> Vec<&'a Value> {
    objects.iter().filter(|o| o["kind"] == kind).collect()
}

fn str_of(v: &Value) -> &str {
    v.as_str().unwrap_or_else(|| panic!("not a string: {v}"))
}

/// True when every key/value of `selector` is in `labels`.
fn selects(selector: &Value, labels: &Value) -> bool {
    selector.as_object().is_some_and(|s| !s.is_empty() && s.iter().all(|(k, v)| labels.get(k) == Some(v)))
}

/// A duration like `25s`, `1m`, `2m`, `40` (seconds) in seconds.
fn seconds(text: &str) -> u64 {
    let (num, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let n: u64 = num.parse().unwrap_or_else(|_| panic!("not a duration: {text}"));
    match unit {
        "" | "s" => n,
        "m" => n * 60,
        "h" => n * 3600,
        _ => panic!("unit of {text}"),
    }
}

/// The first word after `keyword` on a configuration line starting with it.
fn cfg_value<'a>(config: &'a str, keyword: &str) -> Option<&'a str> {
    config.lines().map(str::trim).find_map(|l| l.strip_prefix(keyword).filter(|r| r.starts_with(' ')).and_then(|r| r.split_whitespace().next()))
}

fn cfg_binds(config: &str) -> Vec<u16> {
    config
        .lines()
        .filter_map(|l| l.trim().strip_prefix("bind "))
        .map(|b| b.split_whitespace().next().unwrap().rsplit(':').next().unwrap().parse().unwrap())
        .collect()
}

#[test]
fn deploy_configurations_pass_pglb_check() {
    for cfg in ["deploy/kubernetes/pglb/pglb.cfg", "deploy/compose/pglb.cfg"] {
        assert_checks_clean(&repo().join(cfg));
    }
}

#[test]
fn kubernetes_objects_are_what_the_issue_asks_for() {
    let all = rendered();
    for (render, objects) in &all {
        assert!(objects.iter().all(|o| o["metadata"]["namespace"] == "argo"), "{render}: every object in namespace argo");

        // The Service keeps PgCat's name and port (the parallel overlay of
        // the migration's phases 1-2 names it pglb-candidate).
        let service_name = if render == "overlays-parallel" { "pglb-candidate" } else { "pgcat" };
        let svc = find(objects, "Service", service_name);
        let ports: BTreeMap<&str, u64> =
            svc["spec"]["ports"].as_array().unwrap().iter().map(|p| (str_of(&p["name"]), p["port"].as_u64().unwrap())).collect();
        assert_eq!(ports, BTreeMap::from([("postgres", 5432), ("stats", 8404)]), "{render}: Service {service_name} ports");

        let dep = find(objects, "Deployment", "pglb");
        let spec = &dep["spec"];
        let pod = &spec["template"]["spec"];
        assert_eq!(spec["replicas"], 2, "{render}");
        assert!(selects(&svc["spec"]["selector"], &spec["template"]["metadata"]["labels"]), "{render}: Service {service_name} selects the pglb pods");
        assert!(selects(&spec["selector"]["matchLabels"], &spec["template"]["metadata"]["labels"]));
        let anti = &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"];
        assert_eq!(anti["topologyKey"], "kubernetes.io/hostname", "{render}: anti-affinity");
        assert!(selects(&anti["labelSelector"]["matchLabels"], &spec["template"]["metadata"]["labels"]));
        assert_eq!(pod["securityContext"]["runAsNonRoot"], true, "{render}");
        assert_eq!(pod["securityContext"]["runAsUser"], 10001, "{render}");
        assert_eq!(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault");
        assert_eq!(pod["automountServiceAccountToken"], false);

        let containers = pod["containers"].as_array().unwrap();
        assert_eq!(containers.len(), 1);
        let c = &containers[0];
        let image = str_of(&c["image"]);
        let tag = image.rsplit_once(':').map(|(_, t)| t).unwrap_or_else(|| panic!("{render}: image {image} has no tag"));
        assert!(tag != "latest" && !tag.contains('/'), "{render}: image {image} is pinned by tag");
        // The probes use paths pglb's stats listener really serves.
        assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz", "{render}");
        assert_eq!(c["livenessProbe"]["httpGet"]["port"], 8404, "{render}");
        assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/ready", "{render}");
        assert_eq!(c["readinessProbe"]["httpGet"]["port"], 8404, "{render}");
        let sc = &c["securityContext"];
        assert_eq!(sc["runAsNonRoot"], true);
        assert_eq!(sc["readOnlyRootFilesystem"], true);
        assert_eq!(sc["allowPrivilegeEscalation"], false);
        assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
        assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
        assert_eq!(c["resources"], serde_json::json!({"requests": {"memory": "64Mi", "cpu": "100m"}, "limits": {"memory": "128Mi", "cpu": "200m"}}));
        let container_ports: Vec<u64> = c["ports"].as_array().unwrap().iter().map(|p| p["containerPort"].as_u64().unwrap()).collect();
        assert_eq!(container_ports, [5432, 8404]);

        // The configuration: the generated ConfigMap, mounted at /etc/pglb,
        // named in the container's arguments, valid for pglb.
        let mounts: BTreeMap<&str, &str> =
            c["volumeMounts"].as_array().unwrap().iter().map(|m| (str_of(&m["name"]), str_of(&m["mountPath"]))).collect();
        let volumes: BTreeMap<&str, &Value> = pod["volumes"].as_array().unwrap().iter().map(|v| (str_of(&v["name"]), v)).collect();
        let cm_name = str_of(&volumes["config"]["configMap"]["name"]);
        assert!(cm_name.starts_with("pglb-config-"), "{render}: the ConfigMap comes from configMapGenerator (hash suffix): {cm_name}");
        let cm = find(objects, "ConfigMap", cm_name);
        let config = str_of(&cm["data"]["pglb.cfg"]);
        assert_eq!(c["args"], serde_json::json!(["run", "-f", format!("{}/pglb.cfg", mounts["config"])]), "{render}");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pglb.cfg");
        std::fs::write(&path, config).unwrap();
        assert_checks_clean(&path);
        assert_eq!(cfg_binds(config), [8404, 5432], "{render}: the configuration listens where the container ports say");
        assert!(!config.lines().any(|l| l.trim() == "daemon"), "{render}: daemon removed");
        let directives: Vec<&str> = config.lines().map(str::trim).filter(|l| !l.starts_with('#')).collect();
        assert!(directives.contains(&"option pgsql-check user postgres"), "{render}: the fixed health check");
        assert!(!directives.iter().any(|l| l.contains("send-binary")), "{render}: no hand-written StartupMessage");
        assert_eq!(cfg_value(config, "timeout tunnel"), Some("1h"));
        // The runtime API socket is on the writable emptyDir.
        let socket = cfg_value(config, "stats socket").unwrap();
        assert_eq!(Path::new(socket).parent().unwrap(), Path::new(mounts["run"]), "{render}: stats socket on the emptyDir");
        assert!(volumes["run"].get("emptyDir").is_some());
        // Graceful stop: SIGKILL only after preStop + hard-stop-after.
        let pre_stop = &c["lifecycle"]["preStop"]["exec"]["command"];
        assert_eq!(pre_stop[0], "sleep");
        let needed = seconds(str_of(&pre_stop[1])) + seconds(cfg_value(config, "hard-stop-after").expect("hard-stop-after"));
        assert!(pod["terminationGracePeriodSeconds"].as_u64().unwrap() > needed, "{render}: terminationGracePeriodSeconds > {needed}s");

        let pdb = find(objects, "PodDisruptionBudget", "pglb");
        assert_eq!(pdb["spec"]["minAvailable"], 1);
        assert!(selects(&pdb["spec"]["selector"]["matchLabels"], &spec["template"]["metadata"]["labels"]));

        let np = find(objects, "NetworkPolicy", "pglb");
        assert!(selects(&np["spec"]["podSelector"]["matchLabels"], &spec["template"]["metadata"]["labels"]));
        let ingress: Vec<(String, u64)> = np["spec"]["ingress"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|rule| {
                let ns = str_of(&rule["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]).to_string();
                rule["ports"].as_array().unwrap().iter().map(move |p| (ns.clone(), p["port"].as_u64().unwrap()))
            })
            .collect();
        assert_eq!(ingress, [("argo".to_string(), 5432), ("monitoring".to_string(), 8404)], "{render}: NetworkPolicy ingress");
    }

    // Monitoring (custom resources: no schema in validate.sh, so their
    // fields are checked here).
    let argo = &all["overlays-argo"];
    let svc = find(argo, "Service", "pgcat");
    let sm = find(argo, "ServiceMonitor", "pglb");
    assert_eq!(sm["apiVersion"], "monitoring.coreos.com/v1");
    assert!(selects(&sm["spec"]["selector"]["matchLabels"], &svc["metadata"]["labels"]), "the ServiceMonitor selects Service pgcat");
    assert_eq!(sm["spec"]["namespaceSelector"]["matchNames"], serde_json::json!(["argo"]));
    let endpoint = &sm["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], "stats", "a named port of Service pgcat");
    assert_eq!(endpoint["path"], "/metrics");
    let rule = find(argo, "PrometheusRule", "pglb");
    assert_eq!(rule["apiVersion"], "monitoring.coreos.com/v1");
    let rules: BTreeMap<&str, (&str, Option<&str>)> = rule["spec"]["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| {
            assert!(g["name"].is_string());
            g["rules"].as_array().unwrap()
        })
        .map(|r| {
            assert!(r["labels"]["severity"].is_string(), "{r}");
            assert!(r["annotations"]["summary"].is_string(), "{r}");
            (str_of(&r["expr"]), (str_of(&r["alert"]), r["for"].as_str()))
        })
        .collect();
    // The issue's three alerts, and those docs/observability.md lists.
    for (expr, alert, for_) in [
        ("haproxy_backend_up == 0", "PglbBackendDown", Some("1m")),
        ("max by (server) (pglb_server_replication_lag_seconds) > 10", "PglbReplicaLagHigh", Some("2m")),
        ("pglb_split_brain == 1", "PglbSplitBrain", None),
        ("min by (server) (pglb_server_streaming) == 0", "PglbReplicaNotStreaming", Some("1m")),
        ("rate(pglb_pg_errors_sent_total[5m]) > 0", "PglbRefusingClients", Some("5m")),
    ] {
        assert_eq!(rules.get(expr), Some(&(alert, for_)), "alert {alert}: {rules:#?}");
    }
    // Every metric an alert uses is one pglb's /metrics defines (counters
    // are registered without their _total suffix).
    let exporter = std::fs::read_to_string(repo().join("pglb/src/stats/prometheus.rs")).unwrap();
    for expr in rules.keys() {
        let words = expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'));
        let metrics: Vec<&str> = words.filter(|w| w.starts_with("pglb_") || w.starts_with("haproxy_")).collect();
        assert!(!metrics.is_empty(), "{expr}");
        for metric in metrics {
            let registered = metric.strip_suffix("_total").unwrap_or(metric);
            assert!(exporter.contains(&format!("\"{registered}\"")), "{expr}: pglb's /metrics defines no {metric}");
        }
    }
    assert!(find_kind(&all["pglb"], "ServiceMonitor").is_empty(), "deploy/kubernetes/pglb applies without the Prometheus Operator's CRDs");

    // Seed 000's failover-testing environment.
    let ft = &all["overlays-failover-testing"];
    let pg = find(ft, "Deployment", "postgres-failover-test");
    let labels = &pg["spec"]["template"]["metadata"]["labels"];
    for l in ["postgres-primary", "postgres-secondary", "postgres-tertiary"] {
        assert_eq!(labels[l], "true");
    }
    assert_eq!(pg["spec"]["selector"]["matchLabels"], serde_json::json!({"app": "postgres-failover-test"}), "label flips must not orphan the pod");
    assert_eq!(pg["spec"]["template"]["spec"]["containers"][0]["image"], "postgres:15");
    let secret_name = str_of(
        &pg["spec"]["template"]["spec"]["volumes"].as_array().unwrap().iter().find(|v| v["name"] == "password").unwrap()["secret"]["secretName"],
    );
    find(ft, "Secret", secret_name);
    let config = str_of(&find_kind(ft, "ConfigMap")[0]["data"]["pglb.cfg"]);
    for (service, label) in
        [("postgres-primary", "postgres-primary"), ("postgres-secondary", "postgres-secondary"), ("postgres-tertiary", "postgres-tertiary")]
    {
        let s = find(ft, "Service", service);
        assert_eq!(s["spec"]["selector"][label], "true");
        assert!(selects(&s["spec"]["selector"], labels), "Service {service} selects the test pod");
        assert_eq!(s["spec"]["ports"][0]["port"], 5432);
        assert!(config.contains(&format!(" {service}.argo.svc.cluster.local:5432 ")), "pglb.cfg has a server for Service {service}");
    }
}

#[test]
fn dockerfile_matches_the_deployment() {
    let dockerfile = std::fs::read_to_string(repo().join("Dockerfile")).unwrap();
    let lines: Vec<&str> = dockerfile.lines().filter(|l| !l.trim_start().starts_with('#')).collect();
    let has = |l: &str| lines.iter().any(|x| x.trim() == l);
    assert!(lines.iter().any(|l| l.starts_with("FROM rust:") && l.contains("-bookworm AS build")));
    assert!(has("FROM debian:bookworm-slim AS runtime"));
    assert!(has("USER 10001:10001"), "the UID of runAsUser");
    assert!(has("EXPOSE 5432 8404"));
    assert!(has(r#"ENTRYPOINT ["pglb"]"#));
    assert!(has(r#"CMD ["run", "-f", "/etc/pglb/pglb.cfg"]"#));
    assert!(!lines.iter().any(|l| l.starts_with("HEALTHCHECK")), "no HEALTHCHECK, see the Dockerfile's comment");
    let ignore = std::fs::read_to_string(repo().join(".dockerignore")).unwrap();
    assert!(ignore.lines().any(|l| l == "target/") && ignore.lines().any(|l| l == ".git/"));
}

#[test]
fn compose_file_matches_its_configurations() {
    let root = repo();
    let compose = yaml_docs(&root.join("docker-compose.yml")).remove(0);
    let services = compose["services"].as_object().unwrap();
    let names: Vec<&str> = services.keys().map(String::as_str).collect();
    for s in ["primary", "replica1", "replica2", "pglb", "healthd", "haproxy"] {
        assert!(names.contains(&s), "service {s} in {names:?}");
    }
    let env = |s: &str, k: &str| services[s]["environment"][k].as_str().map(str::to_string);
    for s in ["primary", "replica1", "replica2"] {
        assert_eq!(services[s]["image"], "postgres:15");
        assert_eq!(env(s, "POSTGRES_DB").as_deref(), Some("appdb"));
        assert_eq!(env(s, "POSTGRES_USER").as_deref(), Some("postgres"));
        assert_eq!(env(s, "POSTGRES_PASSWORD").as_deref(), Some("postgres"));
    }
    assert_eq!(services["primary"]["ports"], serde_json::json!(["5431:5432"]));
    for s in ["replica1", "replica2"] {
        assert_eq!(env(s, "PRIMARY_HOST").as_deref(), Some("primary"));
        assert_eq!(env(s, "REPLICA_NAME").as_deref(), Some(s));
    }
    let published = |s: &str| -> BTreeMap<u16, u16> {
        services[s]["ports"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| {
                let (host, container) = str_of(p).split_once(':').unwrap();
                (container.parse().unwrap(), host.parse().unwrap())
            })
            .collect()
    };
    let mounted = |s: &str, target: &str| -> PathBuf {
        let v = services[s]["volumes"].as_array().unwrap().iter().map(str_of).find(|v| v.split(':').nth(1) == Some(target));
        root.join(v.unwrap_or_else(|| panic!("{s} mounts nothing at {target}")).split(':').next().unwrap())
    };

    // pglb: the built image, pglb.cfg at the image's default path, the check
    // password in the variable the configuration names, binds published.
    let pglb_cfg_path = mounted("pglb", "/etc/pglb/pglb.cfg");
    let pglb_cfg = std::fs::read_to_string(&pglb_cfg_path).unwrap();
    assert_eq!(services["pglb"]["build"], ".");
    assert_eq!(services["pglb"]["command"], serde_json::json!(["run", "-f", "/etc/pglb/pglb.cfg"]));
    assert_eq!(pglb_cfg.matches("password-env PGLB_CHECK_PASSWORD").count(), 2);
    assert_eq!(env("pglb", "PGLB_CHECK_PASSWORD").as_deref(), Some("postgres"));
    let ports = published("pglb");
    assert_eq!(ports.get(&5434), Some(&5434), "read-only port 5434 as in seed 004");
    for port in cfg_binds(&pglb_cfg) {
        assert!(ports.contains_key(&port), "pglb.cfg binds {port}, which docker-compose.yml does not publish");
    }
    assert!(pglb_cfg.contains("role replica max-lag 10s"));
    assert!(pglb_cfg.contains("role primary"));
    assert!(services["pglb"].get("profiles").is_none(), "pglb starts by default");

    // Profile haproxy: stock HAProxy 2.6 checking through pglb healthd.
    for s in ["healthd", "haproxy"] {
        assert_eq!(services[s]["profiles"], serde_json::json!(["haproxy"]));
    }
    assert_eq!(services["haproxy"]["image"], "haproxy:2.6");
    let haproxy_cfg = std::fs::read_to_string(mounted("haproxy", "/usr/local/etc/haproxy/haproxy.cfg")).unwrap();
    for line in ["option httpchk GET /replica?lag=10s", "http-check expect string OK", "option redispatch", "retries 3"] {
        assert!(haproxy_cfg.lines().any(|l| l.trim() == line), "haproxy.cfg has '{line}'");
    }
    for port in cfg_binds(&haproxy_cfg) {
        assert!(published("haproxy").contains_key(&port), "haproxy.cfg binds {port}, which docker-compose.yml does not publish");
    }
    // Each healthd --listen port is the `check port` of that server in haproxy.cfg.
    let command: Vec<&str> = services["healthd"]["command"].as_array().unwrap().iter().map(str_of).collect();
    assert_eq!(command[0], "healthd");
    let listen: BTreeMap<&str, u16> = command
        .windows(2)
        .filter(|w| w[0] == "--listen")
        .map(|w| {
            let (name, addr) = w[1].split_once('=').unwrap();
            (name, addr.rsplit(':').next().unwrap().parse().unwrap())
        })
        .collect();
    assert_eq!(listen.keys().copied().collect::<Vec<_>>(), ["primary", "replica1", "replica2"]);
    let mut checked = 0;
    for line in haproxy_cfg.lines().map(str::trim).filter(|l| l.starts_with("server ")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        let port: u16 = words[words.iter().position(|w| *w == "port").unwrap() + 1].parse().unwrap();
        assert_eq!(words[words.iter().position(|w| *w == "addr").unwrap() + 1], "healthd", "{line}");
        assert_eq!(listen.get(words[1]), Some(&port), "{line}: healthd serves {} on another port", words[1]);
        checked += 1;
    }
    assert_eq!(checked, 5);

    // The healthd command line is one `pglb healthd` accepts: run it with
    // the addresses moved to loopback (no name lookups) and see it serve.
    let dir = tempfile::tempdir().unwrap();
    let mut args: Vec<String> = Vec::new();
    for (i, w) in command.iter().enumerate() {
        args.push(match command.get(i.wrapping_sub(1)) {
            Some(&"--listen") => format!("{}=127.0.0.1:0", w.split_once('=').unwrap().0),
            Some(&"--node") => {
                let (name, dsn) = w.split_once('=').unwrap();
                assert!(dsn.contains(&format!("host={name} ")) && dsn.contains("dbname=appdb"), "{w}");
                format!("{name}={}", dsn.replace(&format!("host={name} port=5432"), &format!("host=127.0.0.1 port={}", dead_port())))
            }
            _ => w.to_string(),
        });
    }
    let log = dir.path().join("healthd.log");
    let child = pglb().args(&args).stdout(Stdio::null()).stderr(std::fs::File::create(&log).unwrap()).spawn().expect("start pglb healthd");
    let mut child = Killed(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.matches("healthd serving").count() == 3 {
            break;
        }
        assert!(child.0.try_wait().unwrap().is_none(), "pglb {} exited:\n{text}", args.join(" "));
        assert!(Instant::now() < deadline, "pglb healthd did not start its 3 listeners:\n{text}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Kills the child when dropped (also when an assertion fails).
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn dead_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A GET over HTTP/1.0: (status, body).
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    let status = answer.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, answer.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default()))
}

/// docs/operations.md's commands against the ConfigMap's configuration, run
/// here with loopback ports, a temporary socket and servers that refuse
/// connections (a cluster whose PostgreSQL Services have no endpoints).
#[test]
fn configmap_configuration_serves_probes_metrics_and_runtime_api() {
    let root = repo();
    let config = std::fs::read_to_string(root.join("deploy/kubernetes/pglb/pglb.cfg")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("pglb.sock");
    let (pg_port, stats_port, dead) = (dead_port(), dead_port(), dead_port());
    let config = config
        .replace("bind *:5432", &format!("bind 127.0.0.1:{pg_port}"))
        .replace("bind *:8404", &format!("bind 127.0.0.1:{stats_port}"))
        .replace("/var/run/pglb/pglb.sock", socket.to_str().unwrap());
    let config = ["postgres-primary", "postgres-secondary", "postgres-tertiary"]
        .iter()
        .fold(config, |c, s| c.replace(&format!("{s}.argo.svc.cluster.local:5432"), &format!("127.0.0.1:{dead}")));
    assert!(!config.contains("svc.cluster.local") && config.contains(&format!("bind 127.0.0.1:{stats_port}")));
    let path = dir.path().join("pglb.cfg");
    std::fs::write(&path, &config).unwrap();
    let child = pglb().args(["run", "-f"]).arg(&path).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("start pglb");
    let mut child = Killed(child);

    let wait = |what: &str, f: &mut dyn FnMut() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    // The liveness probe answers; the readiness probe says 503 once the
    // checks have found every server DOWN (the pod leaves the Service).
    wait("/healthz", &mut || http_get(stats_port, "/healthz").is_some_and(|(s, _)| s == 200));
    wait("/ready to answer 503", &mut || http_get(stats_port, "/ready").is_some_and(|(s, b)| s == 503 && b.contains("postgres_backend")));

    // pglb ctl show stat (what `kubectl exec ... -- pglb ctl show stat` runs).
    let mut stat = String::new();
    wait("every server DOWN with L4CON in pglb ctl show stat", &mut || {
        let out = pglb().args(["ctl", "-S"]).arg(&socket).args(["show", "stat"]).output().unwrap();
        stat = String::from_utf8_lossy(&out.stdout).into_owned();
        out.status.success()
            && ["postgres-primary", "postgres-secondary", "postgres-tertiary"]
                .iter()
                .all(|s| stat.lines().any(|l| l.starts_with(&format!("postgres_backend,{s},")) && l.contains(",DOWN,") && l.contains(",L4CON,")))
    });
    // PGLB_SOCKET (set in the image) replaces -S.
    let out = pglb().args(["ctl", "show", "info"]).env("PGLB_SOCKET", &socket).output().unwrap();
    assert!(out.status.success(), "pglb ctl show info with PGLB_SOCKET: {}", String::from_utf8_lossy(&out.stderr));
    // echo "show stat" | socat stdio SOCKET, as in HAProxy's runbooks.
    if which("socat") {
        let mut socat = Command::new("socat").arg("stdio").arg(&socket).stdin(Stdio::piped()).stdout(Stdio::piped()).spawn().unwrap();
        socat.stdin.take().unwrap().write_all(b"show stat\n").unwrap();
        let out = socat.wait_with_output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.starts_with("# pxname,svname,") && text.contains("postgres_backend,postgres-primary,"), "{text}");
    }

    // /metrics: the alert's input. (pglb_server_replication_lag_seconds has
    // samples only where SQL-level checks measured a replica; the
    // PrometheusRule test checks that pglb defines it.)
    let (status, metrics) = http_get(stats_port, "/metrics").unwrap();
    assert_eq!(status, 200);
    assert!(metrics.contains("haproxy_backend_up{proxy=\"postgres_backend\"} 0"), "{metrics}");
    for name in ["haproxy_backend_up", "pglb_split_brain"] {
        assert!(metrics.contains(&format!("# TYPE {name} ")), "/metrics has no {name}");
    }
    let (status, page) = http_get(stats_port, "/stats").unwrap();
    assert!(status == 200 && page.contains("postgres-tertiary"));
    // docs/operations.md reads the CSV with `cut -d, -f1,2,18,37,57,66`.
    let (status, csv) = http_get(stats_port, "/stats;csv").unwrap();
    assert_eq!(status, 200);
    let cut = |line: &str| -> Vec<String> {
        let fields: Vec<&str> = line.split(',').collect();
        [1, 2, 18, 37, 57, 66].iter().map(|&f| fields[f - 1].to_string()).collect()
    };
    assert_eq!(cut(csv.lines().next().unwrap()), ["# pxname", "svname", "status", "check_status", "last_chk", "check_desc"]);
    let primary = cut(csv.lines().find(|l| l.starts_with("postgres_backend,postgres-primary,")).expect("postgres-primary row"));
    assert_eq!(primary[2..4], ["DOWN", "L4CON"]);
    assert_eq!(primary[4], "Connection refused", "what the check saw, in the system's words");
    assert_eq!(primary[5], "Layer4 connection problem", "HAProxy's description of the status");

    // SIGTERM: pglb stops well within hard-stop-after (no open session).
    unsafe { libc::kill(child.0.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(s) = child.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "pglb did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "pglb exited with {status} on SIGTERM");
}

fn which(program: &str) -> bool {
    Command::new("sh").args(["-c", &format!("command -v {program}")]).stdout(Stdio::null()).status().is_ok_and(|s| s.success())
}
