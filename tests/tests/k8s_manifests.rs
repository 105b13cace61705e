//! The deployment files agree with themselves and with the binaries: the
//! Kubernetes manifests in deploy/k8s/ (headless Service, worker StatefulSet,
//! coordinator Job, token Secret), deploy/docker-compose.yml and the
//! Dockerfile. No cluster is needed: names, labels, ports, addresses and
//! secret references are cross-checked, so a rename in one place fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde_yaml::Value;

fn deploy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy")
}

/// Every YAML document of every file in deploy/k8s/.
fn k8s_documents() -> Vec<(String, Value)> {
    let dir = deploy_dir().join("k8s");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no manifests in {}", dir.display());
    let mut docs = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap();
        // Documents are separated by `---` lines.
        for doc in text.split("\n---") {
            let v: Value = serde_yaml::from_str(doc).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            if !v.is_null() {
                docs.push((f.file_name().unwrap().to_string_lossy().into_owned(), v));
            }
        }
    }
    docs
}

/// `v.a.b.c`, panicking with the path when absent.
fn at<'a>(v: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(v, |cur, key| match cur {
        Value::Sequence(s) => &s[key.parse::<usize>().unwrap_or_else(|_| panic!("index {key} in {path}"))],
        _ => cur.get(key).unwrap_or_else(|| panic!("missing {path} (at {key})")),
    })
}

fn s<'a>(v: &'a Value, path: &str) -> &'a str {
    at(v, path).as_str().unwrap_or_else(|| panic!("{path} is not a string"))
}

fn seq<'a>(v: &'a Value, path: &str) -> &'a Vec<Value> {
    at(v, path).as_sequence().unwrap_or_else(|| panic!("{path} is not a list"))
}

fn strings(v: &Value, path: &str) -> Vec<String> {
    seq(v, path).iter().map(|x| x.as_str().unwrap().to_owned()).collect()
}

fn labels(v: &Value, path: &str) -> BTreeMap<String, String> {
    at(v, path)
        .as_mapping()
        .unwrap_or_else(|| panic!("{path} is not a mapping"))
        .iter()
        .map(|(k, v)| (k.as_str().unwrap().to_owned(), v.as_str().unwrap().to_owned()))
        .collect()
}

/// Every selector label is on the pods.
fn selects(selector: &BTreeMap<String, String>, pod: &BTreeMap<String, String>) -> bool {
    !selector.is_empty() && selector.iter().all(|(k, v)| pod.get(k) == Some(v))
}

/// The value following `flag` in an argument list.
fn flag_value<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == flag)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

fn port_of(addr: &str) -> u16 {
    addr.rsplit_once(':').unwrap().1.parse().unwrap()
}

fn one<'a>(docs: &'a [(String, Value)], kind: &str) -> &'a Value {
    let found: Vec<&Value> = docs.iter().filter(|(_, d)| s(d, "kind") == kind).map(|(_, d)| d).collect();
    assert_eq!(found.len(), 1, "expected one {kind}, found {}", found.len());
    found[0]
}

/// The document of `kind` named `name`.
fn named<'a>(docs: &'a [(String, Value)], kind: &str, name: &str) -> &'a Value {
    let found: Vec<&Value> = docs
        .iter()
        .filter(|(_, d)| s(d, "kind") == kind && s(d, "metadata.name") == name)
        .map(|(_, d)| d)
        .collect();
    assert_eq!(found.len(), 1, "expected one {kind} named {name}, found {}", found.len());
    found[0]
}

/// The secret volume of a pod spec: (secret name, key, path inside the mount), and the mount path.
fn secret_file(pod: &Value, container: &Value) -> (String, String, String) {
    let vols = seq(pod, "volumes");
    for m in seq(container, "volumeMounts") {
        let vol = vols
            .iter()
            .find(|v| s(v, "name") == s(m, "name"))
            .expect("mount of a declared volume");
        if let Some(secret) = vol.get("secret") {
            let item = &seq(secret, "items")[0];
            let file = format!("{}/{}", s(m, "mountPath").trim_end_matches('/'), s(item, "path"));
            return (s(secret, "secretName").into(), s(item, "key").into(), file);
        }
    }
    panic!("container {} mounts no secret", s(container, "name"));
}

#[test]
fn k8s_manifests_are_consistent() {
    let docs = k8s_documents();
    for (file, d) in &docs {
        assert!(
            d.get("apiVersion").and_then(Value::as_str).is_some(),
            "{file}: a document without apiVersion"
        );
        assert!(d.get("kind").and_then(Value::as_str).is_some(), "{file}: a document without kind");
        assert!(at(d, "metadata.name").as_str().is_some_and(|n| !n.is_empty()), "{file}: unnamed");
    }
    let kinds: BTreeSet<&str> = docs.iter().map(|(_, d)| s(d, "kind")).collect();
    for k in ["Service", "StatefulSet", "Job", "Secret", "PersistentVolumeClaim", "Deployment"] {
        assert!(kinds.contains(k), "no {k} in deploy/k8s");
    }

    let sts = one(&docs, "StatefulSet");
    let svc = named(&docs, "Service", s(sts, "spec.serviceName"));
    let job = one(&docs, "Job");
    let pvc = one(&docs, "PersistentVolumeClaim");
    // The cluster's token is the Secret the workers mount.
    let worker_secret = secret_file(at(sts, "spec.template.spec"), &seq(sts, "spec.template.spec.containers")[0]).0;
    let secret = named(&docs, "Secret", &worker_secret);

    // Workers: a headless Service in front of the StatefulSet's pods.
    let svc_name = s(svc, "metadata.name");
    assert_eq!(
        at(svc, "spec.clusterIP").as_str(),
        Some("None"),
        "the worker Service must be headless"
    );
    assert_eq!(
        s(sts, "spec.serviceName"),
        svc_name,
        "StatefulSet serviceName must name the headless Service"
    );
    let pod_labels = labels(sts, "spec.template.metadata.labels");
    assert!(
        selects(&labels(sts, "spec.selector.matchLabels"), &pod_labels),
        "StatefulSet selector misses its pods"
    );
    assert!(
        selects(&labels(svc, "spec.selector"), &pod_labels),
        "Service selector misses the worker pods"
    );
    let replicas = at(sts, "spec.replicas").as_u64().expect("replicas");
    assert!(replicas >= 1);

    let worker = &seq(sts, "spec.template.spec.containers")[0];
    assert!(s(worker, "image").starts_with("als-worker:"), "worker image");
    assert_eq!(
        s(worker, "imagePullPolicy"),
        "Never",
        "no registry: images are loaded into the nodes"
    );
    let worker_args = strings(worker, "args");
    let listen_port = port_of(flag_value(&worker_args, "--listen").expect("worker --listen"));
    let cport = &seq(worker, "ports")[0];
    assert_eq!(
        at(cport, "containerPort").as_u64(),
        Some(listen_port as u64),
        "containerPort vs --listen"
    );
    let sport = &seq(svc, "spec.ports")[0];
    let svc_port = at(sport, "port").as_u64().unwrap() as u16;
    assert_eq!(svc_port, listen_port, "Service port vs worker port");
    match sport.get("targetPort") {
        Some(Value::String(name)) => assert_eq!(cport.get("name").and_then(Value::as_str), Some(name.as_str()), "targetPort name"),
        Some(t) => assert_eq!(t.as_u64(), Some(listen_port as u64), "targetPort"),
        None => {}
    }
    for probe in ["readinessProbe", "livenessProbe"] {
        let cmd = strings(worker, &format!("{probe}.exec.command"));
        assert_eq!(cmd[0], "/worker", "{probe} runs the worker binary");
        let addr = flag_value(&cmd, "--health-check").unwrap_or_else(|| panic!("{probe} without --health-check"));
        assert_eq!(port_of(addr), listen_port, "{probe} port");
    }

    // The coordinator reaches each pod by its stable DNS name.
    let pod = at(job, "spec.template.spec");
    let coord = &seq(pod, "containers")[0];
    assert!(s(coord, "image").starts_with("als-coordinator:"), "coordinator image");
    assert_eq!(s(coord, "imagePullPolicy"), "Never");
    let coord_args = strings(coord, "args");
    let sts_name = s(sts, "metadata.name");
    let expected: Vec<String> = (0..replicas).map(|i| format!("{sts_name}-{i}.{svc_name}:{svc_port}")).collect();
    let workers: Vec<String> = flag_value(&coord_args, "--workers")
        .expect("coordinator --workers")
        .split(',')
        .map(str::to_owned)
        .collect();
    assert_eq!(workers, expected, "coordinator --workers vs StatefulSet pod DNS names");
    // It starts only once each worker answers its health check.
    let waited: Vec<String> = seq(pod, "initContainers")
        .iter()
        .map(|c| {
            flag_value(&strings(c, "args"), "--health-check")
                .expect("init container probes")
                .to_owned()
        })
        .collect();
    assert_eq!(waited, expected, "init containers wait for every worker");
    assert!(
        matches!(s(pod, "restartPolicy"), "OnFailure" | "Never"),
        "a Job's pods must not restart Always"
    );

    // One token: the Secret's key, mounted where both --token-file flags point.
    let secret_name = s(secret, "metadata.name");
    let secret_keys: BTreeSet<String> = ["stringData", "data"]
        .iter()
        .filter_map(|k| secret.get(k).and_then(Value::as_mapping))
        .flat_map(|m| m.keys().map(|k| k.as_str().unwrap().to_owned()))
        .collect();
    for (who, pod, c, args) in [
        ("worker", at(sts, "spec.template.spec"), worker, &worker_args),
        ("coordinator", pod, coord, &coord_args),
    ] {
        let (name, key, file) = secret_file(pod, c);
        assert_eq!(name, secret_name, "{who} mounts another Secret");
        assert!(
            secret_keys.contains(&key),
            "{who} uses key {key}, not in the Secret ({secret_keys:?})"
        );
        assert_eq!(
            flag_value(args, "--token-file"),
            Some(file.as_str()),
            "{who} --token-file vs the mounted secret"
        );
    }

    // The model lands on the claimed volume.
    let out = flag_value(&coord_args, "--out").expect("coordinator --out");
    let vols = seq(pod, "volumes");
    let on_claim = seq(coord, "volumeMounts").iter().any(|m| {
        let vol = vols.iter().find(|v| s(v, "name") == s(m, "name")).unwrap();
        vol.get("persistentVolumeClaim")
            .is_some_and(|c| s(c, "claimName") == s(pvc, "metadata.name") && out.starts_with(s(m, "mountPath")))
    });
    assert!(on_claim, "--out {out} is not on the PersistentVolumeClaim");

    // The workers' --input-root is a read-only volume the coordinator
    // mounts at the same path from the same source: a --data path under it
    // names the same file for all of them (the workers read it).
    let root = flag_value(&worker_args, "--input-root").expect("worker --input-root");
    let source_at = |pod: &Value, c: &Value| -> Value {
        let m = seq(c, "volumeMounts")
            .iter()
            .find(|m| s(m, "mountPath") == root)
            .unwrap_or_else(|| panic!("{} mounts nothing at {root}", s(c, "name")));
        assert_eq!(at(m, "readOnly").as_bool(), Some(true), "{} writes the input", s(c, "name"));
        let mut vol = seq(pod, "volumes").iter().find(|v| s(v, "name") == s(m, "name")).unwrap().clone();
        vol.as_mapping_mut().unwrap().remove("name");
        vol
    };
    assert_eq!(
        source_at(at(sts, "spec.template.spec"), worker),
        source_at(pod, coord),
        "the workers and the coordinator read different input volumes"
    );

    // The model server: a Deployment reading the model the Job writes, from
    // the same claim (read-only), behind its own Service and its own token.
    let dep = one(&docs, "Deployment");
    let spod = at(dep, "spec.template.spec");
    let serve = &seq(spod, "containers")[0];
    assert!(s(serve, "image").starts_with("als-coordinator:"), "serve image");
    assert_eq!(s(serve, "imagePullPolicy"), "Never");
    let sargs = strings(serve, "args");
    assert_eq!(sargs[0], "serve");
    assert_eq!(flag_value(&sargs, "--model"), Some(out), "serve --model vs the Job's --out");
    assert!(!sargs.iter().any(|a| a == "--insecure"), "serve must not run without a token");
    let svols = seq(spod, "volumes");
    let model_mount = seq(serve, "volumeMounts")
        .iter()
        .find(|m| out.starts_with(s(m, "mountPath")) && s(m, "mountPath") != "/")
        .expect("the model's volume is mounted in the server");
    assert_eq!(at(model_mount, "readOnly").as_bool(), Some(true), "serve only reads the model");
    let vol = svols.iter().find(|v| s(v, "name") == s(model_mount, "name")).unwrap();
    assert_eq!(
        s(vol, "persistentVolumeClaim.claimName"),
        s(pvc, "metadata.name"),
        "serve reads the Job's claim"
    );
    let (sname, skey, sfile) = secret_file(spod, serve);
    assert_ne!(sname, secret_name, "serving clients are not cluster peers: their own token");
    let ssecret = named(&docs, "Secret", &sname);
    assert!(
        ssecret
            .get("stringData")
            .or_else(|| ssecret.get("data"))
            .and_then(|d| d.get(&skey))
            .is_some(),
        "serve uses key {skey}, not in Secret {sname}"
    );
    assert_eq!(
        flag_value(&sargs, "--token-file"),
        Some(sfile.as_str()),
        "serve --token-file vs its mounted secret"
    );
    let spod_labels = labels(dep, "spec.template.metadata.labels");
    assert!(
        selects(&labels(dep, "spec.selector.matchLabels"), &spod_labels),
        "Deployment selector misses its pods"
    );
    let listen = port_of(flag_value(&sargs, "--listen").expect("serve --listen"));
    let sport = &seq(serve, "ports")[0];
    assert_eq!(
        at(sport, "containerPort").as_u64(),
        Some(listen as u64),
        "containerPort vs --listen"
    );
    for probe in ["readinessProbe", "livenessProbe"] {
        // Probes carry no token: they must use the route that needs none.
        assert_eq!(s(serve, &format!("{probe}.httpGet.path")), "/health", "{probe}");
        match at(serve, &format!("{probe}.httpGet.port")) {
            Value::String(n) => assert_eq!(sport.get("name").and_then(Value::as_str), Some(n.as_str()), "{probe} port name"),
            p => assert_eq!(p.as_u64(), Some(listen as u64), "{probe} port"),
        }
    }
    let services: Vec<&Value> = docs.iter().filter(|(_, d)| s(d, "kind") == "Service").map(|(_, d)| d).collect();
    let front = services
        .iter()
        .find(|v| v.get("spec").and_then(|sp| sp.get("selector")).is_some() && selects(&labels(v, "spec.selector"), &spod_labels))
        .expect("a Service in front of the model server");
    assert_ne!(s(front, "metadata.name"), svc_name);
    let fport = &seq(front, "spec.ports")[0];
    match fport.get("targetPort") {
        Some(Value::String(n)) => assert_eq!(
            sport.get("name").and_then(Value::as_str),
            Some(n.as_str()),
            "serve Service targetPort"
        ),
        Some(t) => assert_eq!(t.as_u64(), Some(listen as u64), "serve Service targetPort"),
        None => assert_eq!(at(fport, "port").as_u64(), Some(listen as u64)),
    }
}

/// The coordinator's command in the compose file, without the user's extra-flags variable.
fn compose_command(v: &Value) -> Vec<String> {
    match v {
        Value::String(c) => c.split_whitespace().filter(|a| !a.starts_with("${")).map(str::to_owned).collect(),
        Value::Sequence(s) => s.iter().map(|a| a.as_str().unwrap().to_owned()).collect(),
        _ => panic!("command must be a string or a list"),
    }
}

#[test]
fn compose_file_is_consistent() {
    let path = deploy_dir().join("docker-compose.yml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut c: Value = serde_yaml::from_str(&text).unwrap();
    c.apply_merge().unwrap();
    // docker-compose 1.29 reads the compose spec (no version key) or 2.x; 3.x has no depends_on conditions.
    if let Some(v) = c.get("version") {
        assert!(
            v.as_str().is_some_and(|v| v.starts_with('2')),
            "version {v:?}: depends_on conditions need 2.x or none"
        );
    }
    let services = at(&c, "services").as_mapping().unwrap();
    let names: Vec<&str> = services.keys().map(|k| k.as_str().unwrap()).collect();
    let workers: Vec<&str> = names.iter().copied().filter(|n| n.starts_with("worker")).collect();
    assert_eq!(workers.len(), 3, "three worker services: {names:?}");
    let coord = at(&c, "services.coordinator");
    let secret_names: Vec<String> = at(&c, "secrets")
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().into())
        .collect();
    assert_eq!(secret_names.len(), 2, "the cluster token and the model server's: {secret_names:?}");
    // The cluster's token is the workers' secret; the other is the model server's.
    let cluster_secret = strings(at(&c, &format!("services.{}", workers[0])), "secrets");
    assert_eq!(cluster_secret.len(), 1);
    let token_path = format!("/run/secrets/{}", cluster_secret[0]);
    let net = strings(coord, "networks");
    assert_eq!(
        at(&c, "networks")
            .get(&net[0])
            .and_then(|n| n.get("internal"))
            .and_then(Value::as_bool),
        Some(true)
    );

    let mut port = None;
    for w in &workers {
        let svc = at(&c, &format!("services.{w}"));
        assert!(s(svc, "image").starts_with("als-worker:"), "{w} image");
        let args = strings(svc, "command");
        assert_eq!(flag_value(&args, "--token-file"), Some(token_path.as_str()), "{w} token");
        assert!(!args.iter().any(|a| a == "--insecure"), "{w} must not run without a token");
        let p = port_of(flag_value(&args, "--listen").unwrap());
        assert!(port.is_none_or(|q| q == p), "workers on different ports");
        port = Some(p);
        let test = strings(svc, "healthcheck.test");
        assert_eq!(&test[..2], ["CMD", "/worker"], "{w}: exec healthcheck (no shell in the image)");
        assert_eq!(port_of(flag_value(&test, "--health-check").unwrap()), p, "{w} healthcheck port");
        assert_eq!(strings(svc, "secrets"), cluster_secret);
        assert_eq!(strings(svc, "networks"), net, "{w} network");
        assert_eq!(
            s(at(&c, "services.coordinator.depends_on"), &format!("{w}.condition")),
            "service_healthy"
        );
    }

    assert!(s(coord, "image").starts_with("als-coordinator:"));
    assert_eq!(strings(coord, "secrets"), cluster_secret);
    let args = compose_command(at(coord, "command"));
    let expected: Vec<String> = workers.iter().map(|w| format!("{w}:{}", port.unwrap())).collect();
    let listed: Vec<String> = flag_value(&args, "--workers").unwrap().split(',').map(str::to_owned).collect();
    assert_eq!(listed, expected, "coordinator --workers vs worker services");
    assert_eq!(flag_value(&args, "--token-file"), Some(token_path.as_str()));
    let out = flag_value(&args, "--out").expect("--out");
    let metrics = flag_value(&args, "--metrics-json").expect("--metrics-json");
    let mounts: Vec<String> = strings(coord, "volumes")
        .iter()
        // HOST:CONTAINER[:MODE]; HOST may hold `${VAR:-default}`, so count from the end.
        .map(|v| {
            v.trim_end_matches(":ro")
                .trim_end_matches(":rw")
                .rsplit(':')
                .next()
                .unwrap()
                .to_owned()
        })
        .collect();
    for f in [out, metrics] {
        assert!(
            mounts.iter().any(|m| f.starts_with(&format!("{m}/"))),
            "{f} is not on a mounted volume ({mounts:?})"
        );
    }
    // Each worker's --input-root is the coordinator's input directory, the same host directory, read-only.
    for w in &workers {
        let svc = at(&c, &format!("services.{w}"));
        let root = flag_value(&strings(svc, "command"), "--input-root").map(str::to_owned);
        let root = root.unwrap_or_else(|| panic!("{w}: no --input-root"));
        let mount = strings(svc, "volumes")
            .into_iter()
            .find(|v| v.trim_end_matches(":ro").ends_with(&format!(":{root}")))
            .unwrap_or_else(|| panic!("{w}: nothing mounted at {root}"));
        assert!(mount.ends_with(":ro"), "{w} writes the input");
        assert!(
            strings(coord, "volumes").contains(&mount),
            "{w}: {mount} is not the coordinator's input"
        );
    }

    // The model server: its own service (profile), reading the model the
    // coordinator writes, from the same host directory, read-only.
    let serve = at(&c, "services.serve");
    assert!(s(serve, "image").starts_with("als-coordinator:"));
    assert_eq!(strings(serve, "profiles"), ["serve"], "serve runs only when asked for");
    let sargs = strings(serve, "command");
    assert_eq!(sargs[0], "serve");
    assert_eq!(
        flag_value(&sargs, "--model"),
        Some(out),
        "serve reads the model the coordinator writes"
    );
    assert!(!sargs.iter().any(|a| a == "--insecure"), "serve must not run without a token");
    let serve_secret = strings(serve, "secrets");
    assert_eq!(serve_secret.len(), 1);
    assert_ne!(serve_secret, cluster_secret, "serving clients are not cluster peers");
    assert!(secret_names.contains(&serve_secret[0]));
    assert_eq!(
        flag_value(&sargs, "--token-file"),
        Some(format!("/run/secrets/{}", serve_secret[0]).as_str())
    );
    let host_dir = |svc: &Value, container: &str| -> String {
        strings(svc, "volumes")
            .iter()
            .find_map(|v| {
                let v = v.trim_end_matches(":ro").trim_end_matches(":rw");
                v.strip_suffix(&format!(":{container}")).map(str::to_owned)
            })
            .unwrap_or_else(|| panic!("no volume at {container}"))
    };
    let out_dir = out.rsplit_once('/').unwrap().0;
    assert_eq!(host_dir(serve, out_dir), host_dir(coord, out_dir), "the same host directory");
    assert!(strings(serve, "volumes").iter().all(|v| v.ends_with(":ro")), "serve only reads");
    let serve_net = strings(serve, "networks");
    assert!(!serve_net.contains(&net[0]), "serving stays off the cluster network");
    assert_ne!(
        at(&c, "networks")
            .get(&serve_net[0])
            .and_then(|n| n.get("internal"))
            .and_then(Value::as_bool),
        Some(true),
        "clients must reach the server"
    );
    let listen = port_of(flag_value(&sargs, "--listen").unwrap());
    let ports = strings(serve, "ports");
    assert!(
        ports
            .iter()
            .any(|p| p.starts_with("127.0.0.1:") && p.ends_with(&format!(":{listen}"))),
        "published on loopback to port {listen}: {ports:?}"
    );
}

#[test]
fn images_are_built_from_scratch() {
    let text = std::fs::read_to_string(deploy_dir().join("Dockerfile")).unwrap();
    let mut stages = BTreeSet::new();
    for line in text.lines().map(str::trim).filter(|l| l.to_ascii_uppercase().starts_with("FROM ")) {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert!(
            words[1] == "scratch" || stages.contains(words[1]),
            "'{line}': nothing can be pulled, every stage must start from scratch"
        );
        if words.len() == 4 && words[2].eq_ignore_ascii_case("AS") {
            stages.insert(words[3]);
        }
    }
    for target in ["worker", "coordinator"] {
        assert!(stages.contains(target), "no '{target}' stage for build.sh");
    }
    assert!(!text.contains("ALS_TOKEN"), "the token must never be baked into an image");
}
