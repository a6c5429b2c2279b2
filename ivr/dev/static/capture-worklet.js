// Microphone capture: hands each 128-sample block (at the AudioContext's rate) to the page.
class IvrCapture extends AudioWorkletProcessor {
  process(inputs) {
    const channel = inputs[0] && inputs[0][0];
    if (channel) this.port.postMessage(channel.slice(0));
    return true;
  }
}
registerProcessor("ivr-capture", IvrCapture);
