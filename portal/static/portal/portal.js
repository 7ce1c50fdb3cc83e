(function (words) {
  // A message that came with the page (after a redirect) is read out only once focus is on it.
  // So is what a device search found: the page looks the same to a screen reader until then.
  var messages = document.getElementById("messages");
  var searchResult = document.getElementById("search-result");
  if (messages) { messages.focus(); } else if (searchResult) { searchResult.focus(); }
  document.querySelectorAll("button.copy").forEach(function (button) {
    button.onclick = function () {
      var label = button.querySelector(".label");
      var key = document.getElementById(button.dataset.copy);
      var status = document.getElementById(button.dataset.copy + "-status");
      function say(text) {
        label.textContent = text;
        // Emptied first: the same words again would not be read out again.
        status.textContent = "";
        setTimeout(function () { status.textContent = text; }, 100);
        setTimeout(function () { label.textContent = words.copy; }, 2000);
      }
      // There is no clipboard on plain HTTP, and some browsers' settings refuse it: say so, not
      // "Copied", and select the key, which the keyboard alone cannot do.
      (navigator.clipboard ? navigator.clipboard.writeText(key.textContent) : Promise.reject()).then(
        function () { say(words.copied); },
        function () {
          window.getSelection().selectAllChildren(key);
          say(words.selected);
        }
      );
    };
  });
})(document.currentScript.dataset);
