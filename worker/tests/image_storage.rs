//! A node whose image disk is full (root: a 2 MiB tmpfs as the state disk): the layer that does
//! not fit is reported as "image storage full" in the pod's message, unused layers are
//! collected first, and layers in use are kept.

use std::process::Command;

use bramble_wire::Arch;
use bramble_wire::msg::Assignment;
use bramble_wire::objects::{
    Image, ImageConfig, ImageLayer, ImageVariant, LayerCompression, Pod, PodPhase, ProcessSpec,
};
use bramble_worker::agent::artifacts::{ArtifactCache, ImageSettings};
use bramble_worker::agent::fake::FakeDriver;

struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

fn image(reference: &str, fill: char, layer: char, size: u64) -> Image {
    Image {
        reference: reference.into(),
        digest: format!("sha256:{}", fill.to_string().repeat(64)),
        variants: vec![ImageVariant {
            arch: Arch::X86_64,
            manifest_digest: format!("sha256:{}", fill.to_string().repeat(64)),
            config_sha256: fill.to_string().repeat(64),
            config: ImageConfig {
                cmd: vec!["/bin/true".into()],
                ..Default::default()
            },
            layers: vec![ImageLayer {
                sha256: layer.to_string().repeat(64),
                size,
                compression: LayerCompression::Gzip,
            }],
        }],
        ..Default::default()
    }
}

fn pod(name: &str, image: &str) -> Pod {
    let mut p = Pod::default();
    p.meta.name = name.into();
    p.meta.namespace = "default".into();
    p.meta.uid = format!("uid-{name}");
    p.spec.image = Some(image.into());
    p.spec.processes = vec![ProcessSpec {
        name: "main".into(),
        ..Default::default()
    }];
    p
}

#[test]
fn a_full_image_disk_is_reported_and_only_unused_layers_go() {
    assert!(
        bramble_worker::sys::process::is_root(),
        "this test mounts a tmpfs (root)"
    );
    let dir = tempfile::tempdir().unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=2m", "tmpfs"])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(st.success(), "mount -t tmpfs");
    let _mounted = Tmpfs(dir.path().to_path_buf());
    let layers = dir.path().join("layers");
    let h = |c: char| c.to_string().repeat(64);
    // A layer in use (its pod is assigned) and an unused one, 512 KiB each.
    for c in ['a', 'b'] {
        std::fs::create_dir_all(layers.join(h(c))).unwrap();
        std::fs::write(layers.join(h(c)).join("f"), vec![1u8; 512 << 10]).unwrap();
    }
    let a = Assignment {
        pods: vec![pod("uses-a", "reg.test/a:1"), pod("big", "reg.test/big:1")],
        images: vec![
            image("reg.test/a:1", '1', 'a', 1000),
            // 4 MiB: never fits on a 2 MiB disk.
            image("reg.test/big:1", '2', 'c', 4 << 20),
        ],
        ..Default::default()
    };
    let mut cache = ArtifactCache::new(&dir.path().join("artifacts"), Arch::X86_64).with_images(
        ImageSettings {
            layers: layers.clone(),
            images: dir.path().join("images"),
            overlay: true,
            gc_high: 85,
            gc_low: 80,
        },
    );
    let mut driver = FakeDriver::new();
    let (up, _rx) = async_channel::unbounded();
    cache.sync(&mut driver, &a, Some(&up), |r| r);
    // The pod whose layer is here runs; the other reports the full disk.
    assert_eq!(driver.state().started, vec!["default/uses-a".to_string()]);
    let w = cache.waiting(&a);
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].name, "big");
    assert_eq!(w[0].status.phase, PodPhase::Pending);
    assert!(
        w[0].status
            .message
            .starts_with("image storage full: layer cccccccccccc"),
        "{}",
        w[0].status.message
    );
    assert!(
        w[0].status.message.contains("retrying in 30 s"),
        "{}",
        w[0].status.message
    );
    // The unused layer was collected to make room; the used one stays.
    assert!(!layers.join(h('b')).exists());
    assert!(layers.join(h('a')).join("f").exists());
    // Nothing half-written.
    assert!(!layers.join(format!("{}.partial", h('c'))).exists());
}
