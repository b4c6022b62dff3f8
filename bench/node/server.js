// The node socket.io 4.8 server of the wsu benchmarks: the same event semantics as the other
// servers under test (bench/src/servers/): `join` (join a room, ack), `pub` (broadcast `msg`
// with the payload's `data` to the payload's `room`), `echo` (ack with the payload).
//
// Websocket transport only; heartbeat and port from the environment, set by `wsu-bench`: PORT
// (0: any; the port is printed as `listening <port>`), PING_INTERVAL_MS, PING_TIMEOUT_MS.
// No logging. bufferutil and utf-8-validate are installed beside it and picked up by `ws`.
"use strict";

const http = require("http");
const { Server } = require("socket.io");

const port = Number(process.env.PORT || 0);
const pingInterval = Number(process.env.PING_INTERVAL_MS || 5000);
const pingTimeout = Number(process.env.PING_TIMEOUT_MS || 10000);

const httpServer = http.createServer((req, res) => {
  res.writeHead(404);
  res.end();
});
httpServer.maxConnections = 30000;

const io = new Server(httpServer, {
  transports: ["websocket"],
  pingInterval,
  pingTimeout,
  serveClient: false,
  // Same inbound limit as wsu's default (64 KiB).
  maxHttpBufferSize: 64 * 1024,
  perMessageDeflate: false,
  httpCompression: false,
});

io.on("connection", (socket) => {
  socket.on("join", (room, ack) => {
    socket.join(String(room));
    if (typeof ack === "function") ack();
  });
  socket.on("leave", (room, ack) => {
    socket.leave(String(room));
    if (typeof ack === "function") ack();
  });
  socket.on("pub", (p) => {
    if (p && typeof p.room === "string") io.to(p.room).emit("msg", p.data);
  });
  socket.on("echo", (data, ack) => {
    if (typeof ack === "function") ack(data);
  });
});

httpServer.listen(port, "127.0.0.1", () => {
  process.stdout.write(`listening ${httpServer.address().port}\n`);
});

process.on("SIGTERM", () => process.exit(0));
