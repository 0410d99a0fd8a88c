// Media generation progress: subscribe to a task, and (standing in for Conduit's backend)
// publish its progress through the REST API with a server key.
//   HUB_URL=… HUB_KEY=condt_… HUB_SERVER_KEY=rhsk_… node media-progress.mjs
import { HubConnectionBuilder } from "@microsoft/signalr";

const baseUrl = process.env.HUB_URL ?? "http://127.0.0.1:8080";
const virtualKey = process.env.HUB_KEY;
const serverKey = process.env.HUB_SERVER_KEY;

// #region subscribe
const images = new HubConnectionBuilder()
  .withUrl(`${baseUrl}/hubs/image-generation`, { accessTokenFactory: () => virtualKey })
  .withAutomaticReconnect()
  .build();
const videos = new HubConnectionBuilder()
  .withUrl(`${baseUrl}/hubs/video-generation`, { accessTokenFactory: () => virtualKey })
  .withAutomaticReconnect()
  .build();
await Promise.all([images.start(), videos.start()]);

const imageTask = `task_${crypto.randomUUID().replaceAll("-", "")}`;
const videoTask = `task_${crypto.randomUUID().replaceAll("-", "")}`;
await images.invoke("SubscribeToTask", imageTask); // joins group image-{taskId}
await videos.invoke("SubscribeToTask", videoTask); // joins group video-{taskId}
// #endregion

const imageDone = new Promise((resolve) =>
  images.on("ImageProgress", (p) => p.status === "completed" && resolve()),
);
const videoDone = new Promise((resolve) => videos.on("VideoStatus", (s) => s.completed && resolve()));

// #region progress
// Image generation progress
images.on("ImageProgress", (progress) => {
  console.log(`Generation ${progress.percentage}% complete`);
});

// Video generation updates
videos.on("VideoStatus", (status) => {
  if (status.completed) {
    console.log("Video ready:", status.url);
  }
});
// #endregion

// #region publish
// Backend side: push an event to everyone subscribed to a task.
async function publish(hub, group, target, ...args) {
  const url = `${baseUrl}/api/hubs/${hub}/groups/${encodeURIComponent(group)}/:send`;
  const response = await fetch(url, {
    method: "POST",
    headers: { Authorization: `Bearer ${serverKey}`, "Content-Type": "application/json" },
    body: JSON.stringify({ target, arguments: args }),
  });
  if (response.status !== 202) throw new Error(`${response.status} ${await response.text()}`);
}

for (const percentage of [10, 50, 90]) {
  await publish("image-generation", `image-${imageTask}`, "ImageProgress", {
    taskId: imageTask, percentage, status: "running",
  });
}
await publish("image-generation", `image-${imageTask}`, "ImageProgress", {
  taskId: imageTask, percentage: 100, status: "completed",
});
await publish("video-generation", `video-${videoTask}`, "VideoStatus", {
  taskId: videoTask, completed: true, url: "https://cdn.example.com/v/42.mp4",
});
// #endregion

await Promise.all([imageDone, videoDone]);
await images.invoke("UnsubscribeFromTask", imageTask);
await Promise.all([images.stop(), videos.stop()]);
