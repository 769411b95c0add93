// What the matrix-js-sdk Rust-crypto scenarios share: steps with timeouts, polling,
// password logins with initRustCrypto, secret-storage key callbacks, the UIA password
// stage and finding a decrypted message.
//
// A scenario calls `harness(cfg)`, declares its steps with `step(name, fn)` and ends with
// `await run(result)`: one "ok <step>" line per step, then "result <JSON>"; on the first
// failure "FAIL <step>: <why>" (with the Rust crypto's last log lines on stderr), exit 1.

import { format } from "node:util";

import * as sdk from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";

export const TIMEOUT_MS = 30000;

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

// Poll `check` (sync or async) every 100 ms until it returns something truthy.
export async function until(check, what, ms = TIMEOUT_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`gave up waiting for ${what}`);
    await sleep(100);
  }
}

// Secret storage keys this process knows, by key ID: what a person would type in.
function cryptoCallbacks(known) {
  return {
    getSecretStorageKey: async ({ keys }) => {
      for (const keyId of Object.keys(keys)) {
        if (known.has(keyId)) return [keyId, known.get(keyId)];
      }
      return null;
    },
    cacheSecretStorageKey: (keyId, _keyInfo, key) => known.set(keyId, key),
  };
}

// The UIA callback for /keys/device_signing/upload: try without auth first (the spec needs
// none for a first upload), answer a 401 with the password stage in the server's session.
// `record` gets "no auth needed" or "password" for each upload.
export function passwordUia(who, record = []) {
  return async (makeRequest) => {
    try {
      const res = await makeRequest(null);
      record.push("no auth needed");
      return res;
    } catch (e) {
      if (e?.httpStatus !== 401 || !e.data?.flows) throw e;
      const flows = e.data.flows.map((f) => f.stages.join(","));
      if (!flows.includes("m.login.password")) throw new Error(`flows are ${flows}`);
      if (typeof e.data.session !== "string") throw new Error("401 without a session");
      record.push("password");
      return await makeRequest({
        type: "m.login.password",
        identifier: { type: "m.id.user", user: who.user },
        password: who.password,
        session: e.data.session,
      });
    }
  };
}

// The live timeline event of the room that decrypted to `body`, if any.
export function findBody(client, roomId, body) {
  const room = client.getRoom(roomId);
  return room?.getLiveTimeline().getEvents().find((e) => e.isEncrypted() && e.getClearContent()?.body === body);
}

export function harness(cfg) {
  logger.setLevel("silent");
  // The Rust crypto traces at debug level to the console: keep its last lines for a failure.
  const trace = [];
  for (const level of ["log", "info", "debug", "warn", "error", "trace"]) {
    console[level] = (...args) => {
      trace.push(format(...args));
      if (trace.length > 300) trace.shift();
    };
  }
  const say = (line) => process.stdout.write(`${line}\n`);
  const steps = [];

  function fail(step, why) {
    process.stderr.write(`${trace.join("\n")}\n`);
    say(`FAIL ${step}: ${why}`);
    process.exit(1);
  }

  function withTimeout(promise, step, ms = TIMEOUT_MS) {
    let timer;
    const timeout = new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms);
    });
    return Promise.race([promise, timeout])
      .catch((e) => fail(step, e?.data?.errcode ? `${e.data.errcode}: ${e.data.error}` : e?.stack ?? e))
      .finally(() => clearTimeout(timer));
  }

  // Log in with a password and start the Rust crypto (in memory: no IndexedDB in node).
  // `client.knownSecretStorageKeys` is where a scenario "types in" a recovery key.
  async function login(who, deviceName) {
    const bare = sdk.createClient({ baseUrl: cfg.baseUrl });
    const res = await bare.loginRequest({
      type: "m.login.password",
      identifier: { type: "m.id.user", user: who.user },
      password: who.password,
      initial_device_display_name: deviceName,
    });
    const known = new Map();
    const client = sdk.createClient({
      baseUrl: cfg.baseUrl,
      accessToken: res.access_token,
      userId: res.user_id,
      deviceId: res.device_id,
      cryptoCallbacks: cryptoCallbacks(known),
    });
    client.knownSecretStorageKeys = known;
    await client.initRustCrypto({ useIndexedDB: false });
    return client;
  }

  // Start syncing; resolve once the first sync is in.
  async function start(client) {
    const ready = new Promise((resolve, reject) => {
      client.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
        if (state === "PREPARED" || state === "SYNCING") resolve();
        if (state === "ERROR") reject(data?.error ?? new Error("sync error"));
      });
    });
    await client.startClient({ initialSyncLimit: 30 });
    await ready;
  }

  const step = (name, fn) => steps.push([name, fn]);

  async function run(result) {
    for (const [name, fn] of steps) {
      await withTimeout(fn(), name);
      say(`ok ${name}`);
    }
    say(`result ${JSON.stringify(result)}`);
    process.exit(0);
  }

  return { login, start, step, run };
}
