// Two matrix-js-sdk clients chatting through a real pocketserver.
//
// Usage: node scenario.mjs '{"baseUrl": "...", "alice": {"user": "...", "password": "..."},
//                            "bob": {...}}'
// Prints one "ok <step>" line per step; exits 1 with "FAIL <step>: <why>" on the first failure.

import * as sdk from "matrix-js-sdk";
import { logger } from "matrix-js-sdk/lib/logger.js";

logger.setLevel("silent");

const cfg = JSON.parse(process.argv[2]);
const TIMEOUT_MS = 20000;

function fail(step, why) {
  console.log(`FAIL ${step}: ${why}`);
  process.exit(1);
}

function withTimeout(promise, step, ms = TIMEOUT_MS) {
  return Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`timed out after ${ms} ms`)), ms)),
  ]).catch((e) => fail(step, e?.data?.errcode ? `${e.data.errcode}: ${e.data.error}` : e?.message ?? e));
}

async function login(who) {
  const bare = sdk.createClient({ baseUrl: cfg.baseUrl });
  const res = await bare.loginRequest({
    type: "m.login.password",
    identifier: { type: "m.id.user", user: who.user },
    password: who.password,
    initial_device_display_name: "js-sdk scenario",
  });
  return sdk.createClient({
    baseUrl: cfg.baseUrl,
    accessToken: res.access_token,
    userId: res.user_id,
    deviceId: res.device_id,
  });
}

async function start(client, opts = {}) {
  const ready = new Promise((resolve, reject) => {
    client.on(sdk.ClientEvent.Sync, (state, _prev, data) => {
      if (state === "PREPARED" || state === "SYNCING") resolve();
      if (state === "ERROR") reject(data?.error ?? new Error("sync error"));
    });
  });
  await client.startClient({ initialSyncLimit: 20, ...opts });
  await ready;
}

// Resolve when `predicate(event, room)` holds for a timeline event seen by `client`.
function waitForTimeline(client, predicate) {
  return new Promise((resolve) => {
    const handler = (event, room) => {
      if (predicate(event, room)) {
        client.removeListener(sdk.RoomEvent.Timeline, handler);
        resolve(event);
      }
    };
    client.on(sdk.RoomEvent.Timeline, handler);
  });
}

function waitForRoom(client, roomId, membership) {
  return new Promise((resolve) => {
    const check = () => {
      const room = client.getRoom(roomId);
      if (room && room.getMyMembership() === membership) {
        client.removeListener(sdk.ClientEvent.Room, check);
        client.removeListener(sdk.RoomEvent.MyMembership, check);
        resolve(room);
        return true;
      }
      return false;
    };
    if (!check()) {
      client.on(sdk.ClientEvent.Room, check);
      client.on(sdk.RoomEvent.MyMembership, check);
    }
  });
}

const steps = [];
const step = (name, fn) => steps.push([name, fn]);
const ctx = {};

step("login both", async () => {
  ctx.alice = await login(cfg.alice);
  ctx.bob = await login(cfg.bob);
  await start(ctx.alice);
  await start(ctx.bob);
});

step("create room and invite", async () => {
  const { room_id } = await ctx.alice.createRoom({ name: "js room", invite: [ctx.bob.getUserId()] });
  ctx.roomId = room_id;
  await waitForRoom(ctx.bob, room_id, "invite");
});

step("join", async () => {
  await ctx.bob.joinRoom(ctx.roomId);
  await waitForRoom(ctx.bob, ctx.roomId, "join");
});

step("exchange messages", async () => {
  const seen = waitForTimeline(ctx.bob, (e) => e.getContent().body === "hello bob");
  const { event_id } = await ctx.alice.sendTextMessage(ctx.roomId, "hello bob");
  ctx.helloId = event_id;
  await seen;
  const back = waitForTimeline(ctx.alice, (e) => e.getContent().body === "hi alice");
  await ctx.bob.sendTextMessage(ctx.roomId, "hi alice");
  await back;
});

step("typing", async () => {
  const seen = new Promise((resolve) =>
    ctx.alice.on(sdk.RoomMemberEvent.Typing, (_e, member) => {
      if (member.userId === ctx.bob.getUserId() && member.typing) resolve();
    }),
  );
  await ctx.bob.sendTyping(ctx.roomId, true, 10000);
  await seen;
});

step("read receipt", async () => {
  const room = ctx.alice.getRoom(ctx.roomId);
  const seen = new Promise((resolve) =>
    room.on(sdk.RoomEvent.Receipt, () => {
      // true: ignore the receipt js-sdk synthesises from Bob's own later message.
      if (room.getEventReadUpTo(ctx.bob.getUserId(), true) === ctx.helloId) resolve();
    }),
  );
  const event = ctx.bob.getRoom(ctx.roomId).findEventById(ctx.helloId);
  await ctx.bob.sendReadReceipt(event);
  await seen;
});

step("edit", async () => {
  const seen = waitForTimeline(ctx.bob, (e) => e.getContent()["m.new_content"]?.body === "hello bob!");
  await ctx.alice.sendMessage(ctx.roomId, {
    msgtype: "m.text",
    body: "* hello bob!",
    "m.new_content": { msgtype: "m.text", body: "hello bob!" },
    "m.relates_to": { rel_type: "m.replace", event_id: ctx.helloId },
  });
  await seen;
});

step("react", async () => {
  const seen = waitForTimeline(ctx.alice, (e) => e.getType() === "m.reaction");
  await ctx.bob.sendEvent(ctx.roomId, "m.reaction", {
    "m.relates_to": { rel_type: "m.annotation", event_id: ctx.helloId, key: "👍" },
  });
  await seen;
});

step("thread reply", async () => {
  const seen = waitForTimeline(ctx.alice, (e) => e.getContent().body === "in a thread");
  await ctx.bob.sendMessage(ctx.roomId, ctx.helloId, {
    msgtype: "m.text",
    body: "in a thread",
    "m.relates_to": { rel_type: "m.thread", event_id: ctx.helloId, is_falling_back: true,
                      "m.in_reply_to": { event_id: ctx.helloId } },
  });
  await seen;
});

step("redact", async () => {
  const { event_id } = await ctx.bob.sendTextMessage(ctx.roomId, "oops");
  const seen = waitForTimeline(ctx.alice, (e) => e.getType() === "m.room.redaction");
  await ctx.bob.redactEvent(ctx.roomId, event_id);
  await seen;
  const res = await ctx.alice.fetchRoomEvent(ctx.roomId, event_id);
  if (res.content && Object.keys(res.content).length) throw new Error("still has content");
});

step("paginate 200+ back", async () => {
  for (let i = 0; i < 210; i++) {
    await ctx.alice.sendTextMessage(ctx.roomId, `bulk ${i}`);
  }
  let from = null;
  const bodies = [];
  for (let page = 0; page < 20 && bodies.length < 220; page++) {
    const res = await ctx.bob.createMessagesRequest(ctx.roomId, from, 50, sdk.Direction.Backward);
    for (const e of res.chunk) if (e.type === "m.room.message") bodies.push(e.content.body);
    if (!res.end) break;
    from = res.end;
  }
  const bulk = bodies.filter((b) => b?.startsWith("bulk "));
  if (bulk.length !== 210) throw new Error(`saw ${bulk.length} of 210 bulk messages`);
  if (new Set(bulk).size !== 210) throw new Error("duplicates in pagination");
});

step("search", async () => {
  const res = await ctx.bob.searchRoomEvents({ term: "hello" });
  if (!res.results?.length) throw new Error("no search results");
});

step("profile", async () => {
  await ctx.bob.setDisplayName("Bob the Builder");
  const p = await ctx.alice.getProfileInfo(ctx.bob.getUserId());
  if (p.displayname !== "Bob the Builder") throw new Error(`profile is ${JSON.stringify(p)}`);
});

step("account data and tags", async () => {
  // Delivered back through /sync (js-sdk reads its store while it is syncing)...
  const synced = new Promise((resolve) =>
    ctx.bob.on(sdk.ClientEvent.AccountData, (event) => {
      if (event.getType() === "org.example.settings") resolve(event.getContent());
    }),
  );
  await ctx.bob.setAccountData("org.example.settings", { theme: "dark" });
  const got = await synced;
  if (got?.theme !== "dark") throw new Error(`account data is ${JSON.stringify(got)}`);
  // ...and stored on the server.
  const stored = await ctx.bob.http.authedRequest(
    sdk.Method.Get,
    `/user/${encodeURIComponent(ctx.bob.getUserId())}/account_data/org.example.settings`,
  );
  if (stored.theme !== "dark") throw new Error(`stored account data is ${JSON.stringify(stored)}`);
  await ctx.bob.setRoomTag(ctx.roomId, "u.work", { order: 0.5 });
  const tags = await ctx.bob.getRoomTags(ctx.roomId);
  if (tags.tags?.["u.work"]?.order !== 0.5) throw new Error(`tags are ${JSON.stringify(tags)}`);
});

step("kick, ban, unban", async () => {
  await ctx.alice.kick(ctx.roomId, ctx.bob.getUserId(), "bye");
  await waitForRoom(ctx.bob, ctx.roomId, "leave");
  await ctx.alice.ban(ctx.roomId, ctx.bob.getUserId(), "no");
  await ctx.alice.unban(ctx.roomId, ctx.bob.getUserId());
  await ctx.alice.invite(ctx.roomId, ctx.bob.getUserId());
  await waitForRoom(ctx.bob, ctx.roomId, "invite");
  await ctx.bob.joinRoom(ctx.roomId);
});

step("filter and sync with it", async () => {
  ctx.bob.stopClient();
  const filter = sdk.Filter.fromJson(ctx.bob.getUserId(), null, {
    room: { timeline: { limit: 5, types: ["m.room.message"] } },
  });
  const created = await ctx.bob.createFilter(filter.getDefinition());
  const body = await ctx.bob.http.authedRequest(sdk.Method.Get, "/sync", { filter: created.filterId });
  const events = body.rooms.join[ctx.roomId].timeline.events;
  if (events.length !== 5 || events.some((e) => e.type !== "m.room.message")) {
    throw new Error(`filtered timeline: ${events.map((e) => e.type)}`);
  }
});

step("log out", async () => {
  ctx.alice.stopClient();
  await ctx.alice.logout(true);
  await ctx.bob.logout(true);
});

for (const [name, fn] of steps) {
  await withTimeout(fn(), name);
  console.log(`ok ${name}`);
}
process.exit(0);
