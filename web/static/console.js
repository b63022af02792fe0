// The web console page: connects noVNC (served from /static/vendor/novnc, installed by scripts/assets) to the
// console proxy URL the page carries. The URL holds a single-use token valid for one minute.
const screen = document.getElementById("console-screen");
const status = document.getElementById("console-status");
const cad = document.getElementById("console-cad");

function say(text) {
  if (status) status.textContent = text;
}

async function start() {
  if (!screen) return;
  const url = screen.dataset.url;
  let RFB;
  try {
    ({ default: RFB } = await import("./vendor/novnc/core/rfb.js"));
  } catch (err) {
    say("The console viewer is not installed on this panel (run scripts/assets).");
    return;
  }
  const rfb = new RFB(screen, url, { shared: true });
  rfb.scaleViewport = true;
  rfb.resizeSession = false;
  rfb.addEventListener("connect", () => {
    say("Connected");
    screen.dataset.state = "connected";
    if (cad) cad.disabled = false;
    rfb.focus();
  });
  rfb.addEventListener("disconnect", (e) => {
    screen.dataset.state = "disconnected";
    if (cad) cad.disabled = true;
    say(e.detail.clean ? "Disconnected." : "The connection was closed. Use Reconnect to open the console again.");
  });
  rfb.addEventListener("credentialsrequired", () => say("The console asks for a password this panel does not have."));
  rfb.addEventListener("securityfailure", () => say("The console refused the connection."));
  if (cad) cad.addEventListener("click", () => rfb.sendCtrlAltDel());
  window.hostbayConsole = rfb;
}

start();
