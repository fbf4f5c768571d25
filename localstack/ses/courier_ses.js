// aws-ses-v2-local's SES v2, served with what Courier needs besides.
//
// aws-ses-v2-local (Node.js, express) answers SES v2's `SendEmail` for half
// the CPU of moto's (2026-12-06, 4,000 boto3 `SendEmail`s each, twice: 0.41 and
// 0.47 ms per request against moto's 0.93 and 1.01). It keeps what it accepted
// in memory, parsed. This program starts it and adds, on the same port:
//
// - `GET /courier/sent?after=N&limit=M&raw=0|1`: a page of the accepted mail in
//   the shape of moto's page (`courier_moto.py`), so the stack reads either the
//   same way and a million mails are never one answer;
// - the raw MIME of a raw message as it was sent (the package keeps only what it
//   parsed out of it), for the tests that look inside;
// - `CreateEmailIdentity`, which the package does not know: every identity is
//   verified at once, as moto's are;
// - unique message ids.
//
// Usage: node courier_ses.js <package folder> <host> <port>

"use strict";

const crypto = require("crypto");
const path = require("path");

const [packageDir, host, port] = process.argv.slice(2);
const dist = path.join(packageDir, "dist");
const store = require(path.join(dist, "store"));
const sendEmail = require(path.join(dist, "v2", "sendEmail"));
const util = require(path.join(dist, "util"));
const serve = require(dist).default;

// The package's message ids are nine random digits, which repeat within a
// million mails; SES's are unique. Ids in SES's shape instead.
util.getMessageId = () => `${Date.now().toString(16).padStart(16, "0")}-${crypto.randomUUID()}-000000`;

// Raw messages as sent, with the request's recipients, by message id.
const rawById = new Map();

// The package registers `sendEmail.default` when it builds its app, so this
// wrapper sees every SES v2 `SendEmail`. Its answer's `MessageId` ties the
// request's raw data to the email the package stored.
const accept = sendEmail.default;
sendEmail.default = (req, res, next) => {
  const raw = req.body && req.body.Content && req.body.Content.Raw && req.body.Content.Raw.Data;
  if (typeof raw === "string") {
    const to = (req.body.Destination && req.body.Destination.ToAddresses) || [];
    const send = res.send.bind(res);
    res.send = (body) => {
      if (res.statusCode === 200 && body && body.MessageId) {
        rawById.set(body.MessageId, { to, data: Buffer.from(raw, "base64").toString("utf8") });
      }
      return send(body);
    };
  }
  return accept(req, res, next);
};

function json(res, status, body) {
  const payload = JSON.stringify(body);
  res.writeHead(status, { "Content-Type": "application/json", "Content-Length": Buffer.byteLength(payload) });
  res.end(payload);
}

function sentPage(url, res) {
  const number = (name, fallback) => {
    const value = Number.parseInt(url.searchParams.get(name) ?? "", 10);
    return Number.isFinite(value) ? value : fallback;
  };
  const after = Math.max(number("after", 0), 0);
  const limit = Math.min(Math.max(number("limit", 10000), 1), 50000);
  const whole = url.searchParams.get("raw") === "1";
  const page = store.getStoreReadonly().emails.slice(after, after + limit);
  const simple = [];
  const raw = [];
  for (const email of page) {
    const sent = rawById.get(email.messageId);
    if (sent) {
      const entry = { id: email.messageId, source: email.from, destinations: sent.to };
      if (whole || sent.to.length === 0) entry.raw_data = sent.data;
      raw.push(entry);
    } else {
      simple.push({
        id: email.messageId,
        source: email.from,
        destinations: { ToAddresses: email.destination.to },
        subject: email.subject,
      });
    }
  }
  const next = page.length === limit ? after + page.length : null;
  json(res, 200, { ses: { Message: simple, RawMessage: raw }, next });
}

function createIdentity(req, res) {
  req.resume();
  req.on("end", () => json(res, 200, { IdentityType: "EMAIL_ADDRESS", VerifiedForSendingStatus: true }));
}

serve({ host, port: Number(port) }).then((server) => {
  const app = server.listeners("request")[0];
  server.removeAllListeners("request");
  server.on("request", (req, res) => {
    const url = new URL(req.url, "http://localhost");
    if (req.method === "GET" && url.pathname === "/courier/sent") return sentPage(url, res);
    if (req.method === "POST" && url.pathname === "/v2/email/identities") return createIdentity(req, res);
    return app(req, res);
  });
  console.log(`courier_ses: aws-ses-v2-local serving on ${host}:${port}`);
});
