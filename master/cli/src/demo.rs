//! The demo of `bramble up`: apply a pod, wait until it runs, show it and its log.

use std::time::{Duration, Instant};

use bramble_wire::msg::{RequestBody, ResponseBody};
use bramble_wire::objects::{Kind, Object, PodPhase};

use bramble_client::Client;

/// Applies `manifest` and reports progress on stdout.
pub async fn run(server: &str, token: &str, manifest: &str) -> anyhow::Result<()> {
    let mut c = Client::connect(server, token).await?;
    // Wait for the local node to register.
    let t0 = Instant::now();
    loop {
        if let ResponseBody::List { items, .. } = c
            .call(RequestBody::List {
                kind: Kind::Node,
                namespace: None,
                selector: String::new(),
            })
            .await?
            && items
                .iter()
                .any(|o| matches!(o, Object::Node(n) if n.status.is_ready()))
        {
            break;
        }
        anyhow::ensure!(
            t0.elapsed() < Duration::from_secs(30),
            "the local worker did not register within 30 s; see its log above"
        );
        smol::Timer::after(Duration::from_millis(100)).await;
    }
    println!(
        "node:    registered and Ready after {} ms",
        t0.elapsed().as_millis()
    );
    let objs = bramble_client::manifest::parse(manifest, "demo.toml", "default")
        .map_err(|e| anyhow::anyhow!(e))?;
    let t1 = Instant::now();
    c.call(RequestBody::Apply(objs)).await?;
    println!("applied: pod/hello (32Mi memory, 250m cpu, 32 pids)");
    let pod = loop {
        if let ResponseBody::Object(Object::Pod(p)) = c
            .call(RequestBody::Get {
                kind: Kind::Pod,
                namespace: "default".into(),
                name: "hello".into(),
            })
            .await?
            && p.status.phase != PodPhase::Pending
        {
            break p;
        }
        anyhow::ensure!(
            t1.elapsed() < Duration::from_secs(30),
            "pod/hello did not start within 30 s; try `bramble describe pod hello`"
        );
        smol::Timer::after(Duration::from_millis(20)).await;
    };
    println!(
        "pod:     hello is {} on {} ({} ms after apply)",
        pod.status.phase.as_str(),
        pod.spec.node_name.as_deref().unwrap_or("?"),
        t1.elapsed().as_millis()
    );
    // The script prints its limits last, at a quarter of a core: wait for that line (bounded) rather
    // than for a fixed time that a loaded machine overruns.
    let deadline = Instant::now() + Duration::from_secs(10);
    let logs = loop {
        let logs = fetch_logs(&mut c).await?;
        let complete = matches!(&logs, Ok(t) if t.contains("memory limit:"));
        if complete || logs.is_err() || Instant::now() >= deadline {
            break logs;
        }
        smol::Timer::after(Duration::from_millis(100)).await;
    };
    println!("logs:");
    match logs {
        Ok(text) => print!(
            "  | {}",
            text.replace('\n', "\n  | ").trim_end_matches("  | ")
        ),
        Err(message) => println!("  (logs unavailable: {message})"),
    }
    Ok(())
}

/// The hello pod's whole log so far, or the master's reason why not.
async fn fetch_logs(c: &mut Client) -> anyhow::Result<Result<String, String>> {
    let id = c
        .start(RequestBody::Logs {
            namespace: "default".into(),
            pod: "hello".into(),
            process: None,
            follow: false,
            tail_bytes: None,
            previous: false,
        })
        .await?;
    let mut text = String::new();
    loop {
        let r = c.next().await?;
        if r.id != id {
            continue;
        }
        match r.body {
            ResponseBody::Log(d) => text.push_str(&String::from_utf8_lossy(&d)),
            ResponseBody::End => return Ok(Ok(text)),
            ResponseBody::Error(e) => return Ok(Err(e.message)),
            _ => {}
        }
    }
}
