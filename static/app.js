// Pages with HTMX cards that can fail upstream (the generator, Stripe) link this file.
// Their 502/503 answers are cards with a plain message, so swap them in like any
// other answer rather than dropping them (htmx's default for 5xx).
document.addEventListener("htmx:beforeSwap", function (event) {
  var status = event.detail.xhr.status;
  if (status === 502 || status === 503) {
    event.detail.shouldSwap = true;
    event.detail.isError = false;
  }
});
