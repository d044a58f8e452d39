// The Node.js `ws` echo server that wsgate is benchmarked against: what many teams
// would write instead. Prints `listening ws=ADDR` like the other servers.
const { WebSocketServer } = require('ws');

const port = Number(process.argv[2] || 0);
const server = new WebSocketServer({ host: '127.0.0.1', port, perMessageDeflate: false });
server.on('listening', () => {
  console.log(`listening ws=127.0.0.1:${server.address().port}`);
});
server.on('connection', (socket) => {
  socket.on('message', (data, isBinary) => socket.send(data, { binary: isBinary }));
});
