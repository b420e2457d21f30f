//! The download scripts in `data-scripts/`, against a local `python3 -m http.server` serving
//! small archives in the official layouts that this test builds: success (right folder, nothing
//! reorganised, readable by the readers), a checksum mismatch and a failed download (clear
//! message, nothing left behind), and a second run that leaves existing data alone.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use spatial_reasoning::data::{cifar, folder, stl10, Counts, Split};

struct TempDir(PathBuf);
impl TempDir {
    fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let p = std::env::temp_dir().join(format!("sr-{tag}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
}
impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `python3 -m http.server` on 127.0.0.1 and a free port; killed on drop.
struct Server {
    child: Child,
    url: String,
}
impl Server {
    fn start(dir: &Path) -> Server {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("python3")
            .args([
                "-m",
                "http.server",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
            ])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 is needed to serve the test archives");
        let t0 = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "http.server did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Server {
            child,
            url: format!("http://127.0.0.1:{port}"),
        }
    }
}
impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

fn run(cmd: &mut Command) -> Output {
    cmd.output().unwrap()
}

fn md5(path: &Path) -> String {
    let out = run(Command::new("md5sum").arg(path));
    assert!(out.status.success());
    String::from_utf8(out.stdout).unwrap()[..32].to_string()
}

/// `tar -czf serve/ARCHIVE -C stage FOLDER`
fn tar_gz(stage: &Path, folder: &str, archive: &Path) {
    let out = run(Command::new("tar")
        .arg("-czf")
        .arg(archive)
        .arg("-C")
        .arg(stage)
        .arg(folder));
    assert!(out.status.success(), "{out:?}");
}

fn zip(stage: &Path, folder: &str, archive: &Path) {
    let script = "import os, sys, zipfile\n\
        stage, folder, out = sys.argv[1:4]\n\
        with zipfile.ZipFile(out, 'w') as z:\n\
        \x20   for d, _, files in os.walk(os.path.join(stage, folder)):\n\
        \x20       for f in files:\n\
        \x20           p = os.path.join(d, f)\n\
        \x20           z.write(p, os.path.relpath(p, stage))\n";
    let out = run(Command::new("python3")
        .args(["-c", script])
        .arg(stage)
        .arg(folder)
        .arg(archive));
    assert!(out.status.success(), "{out:?}");
}

/// Run `data-scripts/NAME.sh ROOT` with the given environment (no inherited overrides).
fn script(name: &str, root: &Path, env: &[(&str, &str)]) -> Output {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("data-scripts/{name}.sh"));
    let mut cmd = Command::new("bash");
    cmd.arg(path).arg(root);
    for var in [
        "SPATIAL_REASONING_MIRROR",
        "SPATIAL_REASONING_DATA",
        "CIFAR10_BASE_URL",
        "CIFAR10_MD5",
        "CIFAR100_BASE_URL",
        "CIFAR100_MD5",
        "STL10_BASE_URL",
        "STL10_MD5",
        "TINY_IMAGENET_BASE_URL",
        "TINY_IMAGENET_MD5",
    ] {
        cmd.env_remove(var);
    }
    cmd.envs(env.iter().copied());
    run(&mut cmd)
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Build the four small archives in `serve/`.
fn build_archives(tmp: &Path) -> PathBuf {
    let stage = tmp.join("stage");
    let serve = tmp.join("serve");
    std::fs::create_dir_all(&serve).unwrap();
    // CIFAR-10: two records per batch, label = batch index, pixels = label.
    let c10 = stage.join("cifar-10-batches-bin");
    for (k, name) in [
        "data_batch_1",
        "data_batch_2",
        "data_batch_3",
        "data_batch_4",
        "data_batch_5",
        "test_batch",
    ]
    .iter()
    .enumerate()
    {
        let rec: Vec<u8> = std::iter::once(k as u8)
            .chain(std::iter::repeat_n(k as u8, 3072))
            .collect();
        write(
            &c10.join(format!("{name}.bin")),
            &[rec.clone(), rec].concat(),
        );
    }
    write(
        &c10.join("batches.meta.txt"),
        cifar::CIFAR10_CLASSES.join("\n").as_bytes(),
    );
    tar_gz(
        &stage,
        "cifar-10-batches-bin",
        &serve.join("cifar-10-binary.tar.gz"),
    );
    // CIFAR-100: one record per file.
    let c100 = stage.join("cifar-100-binary");
    let rec: Vec<u8> = [vec![7u8, 77], vec![9u8; 3072]].concat();
    write(&c100.join("train.bin"), &rec);
    write(&c100.join("test.bin"), &rec);
    tar_gz(
        &stage,
        "cifar-100-binary",
        &serve.join("cifar-100-binary.tar.gz"),
    );
    // STL-10: one image per split.
    let stl = stage.join("stl10_binary");
    for split in ["train", "test"] {
        write(
            &stl.join(format!("{split}_X.bin")),
            &vec![5u8; stl10::IMAGE_BYTES],
        );
        write(&stl.join(format!("{split}_y.bin")), &[4]);
    }
    write(&stl.join("unlabeled_X.bin"), &vec![6u8; stl10::IMAGE_BYTES]);
    tar_gz(&stage, "stl10_binary", &serve.join("stl10_binary.tar.gz"));
    // tiny-ImageNet: one class, one training and one validation image.
    let tiny = stage.join("tiny-imagenet-200");
    write(&tiny.join("wnids.txt"), b"n01443537\n");
    write(
        &tiny.join("words.txt"),
        b"n01443537\tgoldfish, Carassius auratus\n",
    );
    for p in [
        "train/n01443537/images/n01443537_0.JPEG",
        "val/images/val_0.JPEG",
    ] {
        std::fs::create_dir_all(tiny.join(p).parent().unwrap()).unwrap();
        image::RgbImage::from_pixel(64, 64, image::Rgb([250, 120, 20]))
            .save_with_format(tiny.join(p), image::ImageFormat::Jpeg)
            .unwrap();
    }
    write(
        &tiny.join("val/val_annotations.txt"),
        b"val_0.JPEG\tn01443537\t0\t0\t63\t63\n",
    );
    zip(
        &stage,
        "tiny-imagenet-200",
        &serve.join("tiny-imagenet-200.zip"),
    );
    serve
}

#[test]
fn download_scripts_verify_unpack_atomically_and_clean_up() {
    let tmp = TempDir::new("scripts");
    let serve = build_archives(&tmp.0);
    let server = Server::start(&serve);
    let url = server.url.as_str();

    // Success for every dataset, through the per-dataset or the shared base-URL variable.
    let root = tmp.0.join("root");
    let cases = [
        (
            "cifar10",
            "CIFAR10",
            "cifar-10-binary.tar.gz",
            "cifar-10-batches-bin",
        ),
        (
            "cifar100",
            "CIFAR100",
            "cifar-100-binary.tar.gz",
            "cifar-100-binary",
        ),
        ("stl10", "STL10", "stl10_binary.tar.gz", "stl10_binary"),
        (
            "tiny-imagenet",
            "TINY_IMAGENET",
            "tiny-imagenet-200.zip",
            "tiny-imagenet-200",
        ),
    ];
    for (k, (name, var, archive, folder)) in cases.iter().enumerate() {
        let sum = md5(&serve.join(archive));
        let md5_var = format!("{var}_MD5");
        let base_var = if k % 2 == 0 {
            format!("{var}_BASE_URL")
        } else {
            "SPATIAL_REASONING_MIRROR".to_string()
        };
        let out = script(name, &root, &[(&md5_var, &sum), (&base_var, url)]);
        assert!(out.status.success(), "{name}: {}", text(&out));
        assert!(root.join(folder).is_dir(), "{name}");
        assert!(
            text(&out).contains(&format!("md5 {sum} OK")),
            "{}",
            text(&out)
        );
    }
    // Only the four dataset folders: no archive, no temporary folder.
    assert_eq!(
        entries(&root),
        vec![
            "cifar-10-batches-bin",
            "cifar-100-binary",
            "stl10_binary",
            "tiny-imagenet-200"
        ]
    );
    // Readable, and tiny-ImageNet keeps its official layout.
    let c10 = cifar::load_cifar10(&root, Split::Test, Counts::Any).unwrap();
    assert_eq!((c10.len(), c10.label(0)), (2, Some(5)));
    let train = cifar::load_cifar10(&root, Split::Train, Counts::Any).unwrap();
    assert_eq!(train.labels, Some(vec![0, 0, 1, 1, 2, 2, 3, 3, 4, 4]));
    let c100 = cifar::load_cifar100(
        &root,
        Split::Train,
        cifar::Cifar100Labels::Fine,
        Counts::Any,
    )
    .unwrap();
    assert_eq!(c100.labels, Some(vec![77]));
    let stl = stl10::load_stl10(&root, Split::Unlabeled, Counts::Any).unwrap();
    assert_eq!(stl.len(), 1);
    assert!(root
        .join("tiny-imagenet-200/val/images/val_0.JPEG")
        .is_file());
    let tiny = folder::load_tiny_imagenet(&root, Split::Test, Counts::Any).unwrap();
    assert_eq!(tiny.class_names, vec!["goldfish"]);

    // A second run leaves the existing folder alone.
    let out = script(
        "cifar10",
        &root,
        &[("CIFAR10_BASE_URL", url), ("CIFAR10_MD5", "0")],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("already exists"));

    // Checksum mismatch: a clear message, non-zero exit, nothing left in the root.
    let root2 = tmp.0.join("root2");
    let wrong = "0123456789abcdef0123456789abcdef";
    let out = script(
        "cifar10",
        &root2,
        &[("CIFAR10_BASE_URL", url), ("CIFAR10_MD5", wrong)],
    );
    assert!(!out.status.success());
    let msg = text(&out);
    assert!(
        msg.contains("checksum mismatch")
            && msg.contains(wrong)
            && msg.contains(&md5(&serve.join("cifar-10-binary.tar.gz"))),
        "{msg}"
    );
    assert_eq!(entries(&root2), Vec::<String>::new());

    // The published checksum (the default) rejects the small test archive too.
    let out = script("stl10", &root2, &[("SPATIAL_REASONING_MIRROR", url)]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("91f7769df0f17e558f3565bffb0c7dfb"),
        "{}",
        text(&out)
    );
    assert_eq!(entries(&root2), Vec::<String>::new());

    // A failed download (404): non-zero exit, nothing left behind.
    std::fs::remove_file(serve.join("cifar-100-binary.tar.gz")).unwrap();
    let out = script("cifar100", &root2, &[("SPATIAL_REASONING_MIRROR", url)]);
    assert!(!out.status.success());
    assert!(text(&out).contains("download of"), "{}", text(&out));
    assert_eq!(entries(&root2), Vec::<String>::new());
}
