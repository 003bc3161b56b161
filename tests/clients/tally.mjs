// Starts a real `tally serve` for a client test: a temporary directory, a loopback port, the
// admin key in the environment; stopped by its process id.
import { spawn } from "node:child_process";
import { mkdtempSync, writeFileSync, readFileSync, existsSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const ADMIN_KEY = "client-test-admin-key-0123456789";

export async function startTally(configToml) {
  const bin = process.env.TALLY_BIN;
  if (!bin || !existsSync(bin)) {
    throw new Error("TALLY_BIN must name a built tally binary (ctest sets it)");
  }
  const dir = mkdtempSync(join(tmpdir(), "tally-client-"));
  writeFileSync(join(dir, "tally.toml"), configToml);
  const portFile = join(dir, "port");
  const child = spawn(bin, ["serve", "--config", join(dir, "tally.toml"), "--data", join(dir, "data"),
                            "--listen", "127.0.0.1:0", "--port-file", portFile, "--threads", "2"],
                      { env: { ...process.env, TALLY_ADMIN_KEY: ADMIN_KEY }, stdio: ["ignore", "ignore", "pipe"] });
  let log = "";
  child.stderr.on("data", (d) => { log += d; });
  for (let i = 0; i < 300 && !existsSync(portFile); i++) {
    if (child.exitCode !== null) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  if (!existsSync(portFile)) {
    child.kill("SIGKILL");
    throw new Error("tally serve did not start: " + log);
  }
  const port = Number(readFileSync(portFile, "utf8").trim());
  const url = `http://127.0.0.1:${port}`;
  return {
    url,
    // Tally's own API, as an admin.
    async api(method, path, body) {
      const res = await fetch(url + path, {
        method,
        headers: { "x-api-key": ADMIN_KEY, "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
      return { status: res.status, body: await res.json() };
    },
    async stop() {
      child.kill("SIGTERM");
      await new Promise((r) => (child.exitCode !== null ? r() : child.on("exit", r)));
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
