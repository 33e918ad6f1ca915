// The timeline's live part: new events appear at the top without a reload (polled once a
// second). Rows are built with textContent only: a sentence is always text, never markup.
"use strict";
(function () {
  const table = document.getElementById("events");
  if (!table || table.dataset.live !== "1") return;
  const body = table.tBodies[0];
  let after = Number(table.dataset.after || 0);
  async function poll() {
    try {
      const response = await fetch("/api/events?after=" + after, { credentials: "same-origin" });
      if (response.ok) {
        for (const e of await response.json()) {
          after = Math.max(after, e.n);
          const row = document.createElement("tr");
          row.className = e.kind + " fresh" + (e.corrected ? " corrected" : "");
          row.dataset.n = String(e.n);
          for (const [cls, value] of [["time", e.time], ["camera", e.camera]]) {
            const cell = row.insertCell();
            cell.className = cls;
            cell.textContent = value;
          }
          const cell = row.insertCell();
          cell.className = "text";
          const link = document.createElement("a");
          link.href = "/event/" + encodeURIComponent(e.event_id);
          link.textContent = e.text;
          cell.appendChild(link);
          body.insertBefore(row, body.firstChild);
        }
      }
    } catch (err) {
      // the server is restarting: try again on the next tick
    }
    setTimeout(poll, 1000);
  }
  setTimeout(poll, 1000);
})();
