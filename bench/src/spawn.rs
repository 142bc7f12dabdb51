//! `--spawn`: a local Sluice on a temporary data directory, stopped and
//! removed when the run ends.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug)]
pub struct Spawned {
    child: Child,
    dir: tempfile::TempDir,
    pub addr: String,
    pub binary: PathBuf,
    pub version: String,
}

impl Spawned {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The broker's log so far (stdout and stderr).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("broker.log")).unwrap_or_default()
    }
}

/// The `sluice` binary: `explicit`, else `$SLUICE_BIN`, else the one next
/// to this executable (same cargo profile), else `sluice` on the PATH.
pub fn find_binary(explicit: Option<PathBuf>) -> PathBuf {
    explicit
        .or_else(|| std::env::var_os("SLUICE_BIN").map(PathBuf::from))
        .or_else(|| {
            let exe = std::env::current_exe().ok()?;
            let dir = exe.parent()?;
            // Integration tests run from target/<profile>/deps.
            [dir.join("sluice"), dir.parent()?.join("sluice")]
                .into_iter()
                .find(|p| p.is_file())
        })
        .unwrap_or_else(|| PathBuf::from("sluice"))
}

/// Starts `binary` on a free loopback port with `cores` shards (pinned by
/// the broker from core 0 up) and `extra` arguments, and waits until it
/// accepts connections.
pub fn spawn(binary: PathBuf, cores: usize, extra: &[String]) -> Result<Spawned, String> {
    let version = Command::new(&binary)
        .arg("--version")
        .output()
        .map_err(|e| format!("running {}: {e}", binary.display()))?;
    let version = String::from_utf8_lossy(&version.stdout).trim().to_string();
    let dir = tempfile::Builder::new()
        .prefix("sluice-bench-")
        .tempdir()
        .map_err(|e| format!("temporary data directory: {e}"))?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("finding a free port: {e}"))?
        .port();
    let addr = format!("127.0.0.1:{port}");
    let log = std::fs::File::create(dir.path().join("broker.log")).map_err(|e| e.to_string())?;
    let log2 = log.try_clone().map_err(|e| e.to_string())?;
    let child = Command::new(&binary)
        .arg("--listen")
        .arg(&addr)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--cores")
        .arg(cores.to_string())
        .args(extra)
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", binary.display()))?;
    let mut s = Spawned {
        child,
        dir,
        addr,
        binary,
        version,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(Some(status)) = s.child.try_wait() {
            return Err(format!("the broker exited ({status}):\n{}", s.log()));
        }
        if TcpStream::connect(&s.addr).is_ok() {
            return Ok(s);
        }
        if Instant::now() > deadline {
            return Err(format!(
                "the broker did not listen on {} within 30 s:\n{}",
                s.addr,
                s.log()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
